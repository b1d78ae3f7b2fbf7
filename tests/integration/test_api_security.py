"""The signed API's security fixes, against a real edge on loopback: signatures bound to
their bucket, access logs without signatures, GET Service scoped to the key, header values
and keys HTTP and XML can carry, and request XML without DTDs or entities."""

from __future__ import annotations

import urllib.parse
import xml.etree.ElementTree as ET
from typing import Any

import pytest_twisted

from edge.api.signature import sign
from edge.config import parse_config
from edge.store.interface import ObjectMeta
from tests.integration.conftest import BUCKET, DOMAIN, request

OTHER = "other-1250000000"
SECRET_ID = "AKIDsecurity"
SECRET_KEY = "security-secret"
LIMITED_ID = "AKIDonlyother"
LIMITED_KEY = "only-other"
ORIGIN_HOST = "202.96.128.86"  # in the bundled ISP tables: accepted without DNS
ORIGIN_XML = (
    "<OriginConfiguration><OriginRule><RulePriority>1</RulePriority>"
    "<OriginType>Proxy</OriginType><OriginInfo><HostInfo><HostName>{host}</HostName>"
    "</HostInfo></OriginInfo></OriginRule></OriginConfiguration>"
)


def api_host(bucket: str) -> str:
    return f"{bucket}.cos.ap-guangzhou.myqcloud.com"


@pytest_twisted.async_fixture
async def edge(edges):
    raw: dict[str, Any] = {
        "listen": "tcp:0:interface=127.0.0.1",
        "data_dir": str(edges.tmp_path / "data"),
        "buckets": {BUCKET: {"domains": [DOMAIN]}, OTHER: {}},
        "credentials": [
            {"secret_id": SECRET_ID, "secret_key": SECRET_KEY},
            {"secret_id": LIMITED_ID, "secret_key": LIMITED_KEY, "buckets": [OTHER]},
        ],
    }
    return await edges.start(parse_config(raw, "security.yaml"))


async def signed(
    port: int,
    method: str,
    path: str,
    *,
    signed_path: str,
    host: str,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    sign_host: bool = True,
    body: bytes | None = None,
    secret: tuple[str, str] = (SECRET_ID, SECRET_KEY),
) -> Any:
    """A request signed with our signer over `signed_path`, sent to `path` with `host`."""
    params = params or {}
    to_sign = dict(headers or {})
    if sign_host:
        to_sign["host"] = host
    auth = sign(*secret, method, signed_path, params, to_sign)
    query = urllib.parse.urlencode(params)
    sent = {**(headers or {}), "Authorization": auth}
    return await request(
        port, path + (f"?{query}" if query else ""), method=method, host=host,
        headers=sent, body=body,
    )  # fmt: skip


async def set_origin(edge: Any, bucket: str) -> None:
    body = ORIGIN_XML.format(host=ORIGIN_HOST).encode()
    reply = await signed(
        edge.port, "PUT", "/", signed_path="/", host=api_host(bucket),
        params={"origin": ""}, body=body,
    )  # fmt: skip
    assert reply.status == 200, reply.body


@pytest_twisted.ensureDeferred
async def test_path_style_signature_without_bucket_does_not_replay(edge):
    """A path-style `DELETE /A/?origin` whose signature leaves the bucket out of the signed
    path (what the edge accepted before) is refused, so it cannot be replayed against
    `/B/?origin`; one that signs `/A/` works on A and is refused on B."""
    await set_origin(edge, BUCKET)
    await set_origin(edge, OTHER)
    host = f"127.0.0.1:{edge.port}"
    for bucket in (BUCKET, OTHER):
        bare = await signed(
            edge.port, "DELETE", f"/{bucket}/", signed_path="/", host=host,
            params={"origin": ""},
        )  # fmt: skip
        assert bare.status == 403, (bucket, bare.status, bare.body)
    assert edge.store is not None
    replay = await signed(
        edge.port, "DELETE", f"/{OTHER}/", signed_path=f"/{BUCKET}/", host=host,
        params={"origin": ""},
    )  # fmt: skip
    assert (replay.status, b"SignatureDoesNotMatch" in replay.body) == (403, True)
    ok = await signed(
        edge.port, "DELETE", f"/{BUCKET}/", signed_path=f"/{BUCKET}/", host=host,
        params={"origin": ""},
    )  # fmt: skip
    assert ok.status == 204
    still = await signed(
        edge.port, "GET", "/", signed_path="/", host=api_host(OTHER), params={"origin": ""}
    )
    assert still.status == 200 and ORIGIN_HOST.encode() in still.body


@pytest_twisted.ensureDeferred
async def test_virtual_host_signature_must_sign_host(edge):
    """When the Host names the bucket, a signature that does not cover `host` is refused:
    otherwise the same signature would be valid with any bucket's Host."""
    await set_origin(edge, OTHER)
    for bucket in (BUCKET, OTHER):
        unsigned = await signed(
            edge.port, "DELETE", "/", signed_path="/", host=api_host(bucket),
            params={"origin": ""}, sign_host=False,
        )  # fmt: skip
        assert unsigned.status == 403 and b"host" in unsigned.body, unsigned.body
    configured = await signed(edge.port, "GET", "/", signed_path="/", host=DOMAIN, sign_host=False)
    assert configured.status == 403
    replay_auth = sign(
        SECRET_ID, SECRET_KEY, "GET", "/", {"origin": ""}, {"host": api_host(BUCKET)}
    )
    replay = await request(
        edge.port, "/?origin", host=api_host(OTHER), headers={"Authorization": replay_auth}
    )
    assert replay.status == 403
    listing = await signed(edge.port, "GET", "/", signed_path="/", host=DOMAIN)
    assert listing.status == 200 and b"<ListBucketResult>" in listing.body


@pytest_twisted.ensureDeferred
async def test_service_root_needs_no_bucket(edge):
    """GET Service names no bucket: a signature over `/` without Host still lists."""
    reply = await signed(edge.port, "GET", "/", signed_path="/", host="127.0.0.1", sign_host=False)
    assert reply.status == 200 and b"<ListAllMyBucketsResult>" in reply.body


@pytest_twisted.ensureDeferred
async def test_access_log_has_no_signature(edge, captured_events):
    """A pre-signed URL is a bearer credential: the access log keeps the path and the
    other parameters but not the values of `q-*` (signature, key id, times)."""
    auth = sign(SECRET_ID, SECRET_KEY, "GET", "/", {"prefix": "x"}, {"host": DOMAIN})
    signature_value = dict(urllib.parse.parse_qsl(auth))["q-signature"]
    reply = await request(edge.port, f"/?prefix=x&{auth}")
    assert reply.status == 200
    lines = [e for e in captured_events if e.get("log_namespace") == "cosedge.access"]
    assert lines, "no access log event"
    uri = lines[-1]["uri"]
    assert uri.startswith("/?prefix=x&q-sign-algorithm=REDACTED")
    assert signature_value not in uri and SECRET_ID not in uri
    assert signature_value not in lines[-1]["log_format"]


@pytest_twisted.ensureDeferred
async def test_list_buckets_shows_only_the_keys_buckets(edge):
    """GET Service with a key limited to `[other]` lists only that bucket."""
    limited = await signed(
        edge.port, "GET", "/", signed_path="/", host="127.0.0.1",
        secret=(LIMITED_ID, LIMITED_KEY),
    )  # fmt: skip
    assert limited.status == 200
    names = [n.text for n in ET.fromstring(limited.body).iter("Name")]
    assert names == [OTHER]
    full = await signed(edge.port, "GET", "/", signed_path="/", host="127.0.0.1")
    assert sorted(n.text for n in ET.fromstring(full.body).iter("Name")) == sorted([BUCKET, OTHER])


@pytest_twisted.ensureDeferred
async def test_non_ascii_signature_is_403_not_500(edge):
    """A q-signature with non-ASCII characters is a mismatch, not a TypeError."""
    auth = sign(SECRET_ID, SECRET_KEY, "GET", "/", {}, {"host": DOMAIN})
    forged = auth.rpartition("q-signature=")[0] + "q-signature=" + urllib.parse.quote("é" * 40)
    reply = await request(edge.port, f"/?{forged}")
    assert reply.status == 403 and b"SignatureDoesNotMatch" in reply.body
    header = await request(edge.port, "/", headers={"Authorization": forged.replace("%C3%A9", "é")})
    assert header.status == 403


@pytest_twisted.ensureDeferred
async def test_header_values_http_cannot_carry_are_refused(edge):
    """PUT and initiate-multipart with a non-ASCII or control-character Content-Type or
    x-cos-meta-* value get 400 InvalidArgument and store nothing."""
    cases = [
        {"Content-Type": "text/plain; charset=é"},
        {"x-cos-meta-owner": "小明"},
        {"Content-Type": "text/plain\x01"},
    ]
    for headers in cases:
        put = await signed(
            edge.port, "PUT", "/bad.txt", signed_path="/bad.txt", host=DOMAIN,
            headers=headers, body=b"x",
        )  # fmt: skip
        assert put.status == 400 and b"InvalidArgument" in put.body, (headers, put.body)
        assert not (edge.data_dir / BUCKET / "bad.txt").exists()
        initiate = await signed(
            edge.port, "POST", "/bad.txt", signed_path="/bad.txt", host=DOMAIN,
            params={"uploads": ""}, headers=headers,
        )  # fmt: skip
        assert initiate.status == 400 and b"InvalidArgument" in initiate.body


@pytest_twisted.ensureDeferred
async def test_unsafe_stored_metadata_is_ignored_on_read(edge):
    """Metadata on disk that HTTP cannot carry (written before the check, or by hand) is
    left out of the response instead of making every GET a 500."""
    path = edge.data_dir / BUCKET / "typed.txt"
    path.write_bytes(b"typed")
    edge.store.meta.write(
        BUCKET,
        "typed.txt",
        ObjectMeta("text/é", {"x-cos-meta-bad\n": "v", "x-cos-meta-ok": "é", "x-cos-meta-n": 5}),
    )
    reply = await request(edge.port, "/typed.txt")
    assert reply.status == 200 and reply.body == b"typed"
    assert reply.header("content-type") != "text/é"
    assert reply.header("x-cos-meta-ok") is None and reply.header("x-cos-meta-n") is None


@pytest_twisted.ensureDeferred
async def test_control_characters_in_keys(edge):
    """A key with a C0 control character is refused with 400 InvalidURI; one that is on
    disk anyway does not make the listing invalid XML."""
    put = await signed(edge.port, "PUT", "/a%01b", signed_path="/a\x01b", host=DOMAIN, body=b"x")
    assert put.status == 400 and b"InvalidURI" in put.body
    assert not (edge.data_dir / BUCKET / "a\x01b").exists()
    (edge.data_dir / BUCKET / "c\x02d").write_bytes(b"raw")
    (edge.data_dir / BUCKET / "amp&<>.txt").write_bytes(b"x")
    listing = await signed(edge.port, "GET", "/", signed_path="/", host=DOMAIN)
    assert listing.status == 200
    keys = [k.text for k in ET.fromstring(listing.body).iter("Key")]
    assert "amp&<>.txt" in keys and "c%02d" in keys
    marker = await signed(
        edge.port, "GET", "/", signed_path="/", host=DOMAIN, params={"marker": "\x03"}
    )
    assert marker.status == 400 and b"InvalidArgument" in marker.body  # no key can have it


BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    b"<OriginConfiguration><OriginRule><RulePriority>1</RulePriority><OriginInfo><HostInfo>"
    b"<HostName>&lol3;</HostName></HostInfo></OriginInfo></OriginRule></OriginConfiguration>"
)
INTERNAL_ENTITY = (
    b'<!DOCTYPE x [<!ENTITY h "'
    + ORIGIN_HOST.encode()
    + b'">]>'
    + ORIGIN_XML.format(host="&h;").encode()
)
EXTERNAL_ENTITY = (
    b'<!DOCTYPE x [<!ENTITY h SYSTEM "file:///etc/hostname">]>'
    + ORIGIN_XML.format(host="&h;").encode()
)


@pytest_twisted.ensureDeferred
async def test_origin_xml_with_dtd_or_entities_is_malformed(edge):
    """Origin bodies with a DTD (entity expansion, external entities) are 400 MalformedXML
    and change nothing; the S3-namespaced form of a good body is accepted."""
    for body in (BILLION_LAUGHS, INTERNAL_ENTITY, EXTERNAL_ENTITY):
        reply = await signed(
            edge.port, "PUT", "/", signed_path="/", host=DOMAIN, params={"origin": ""},
            body=body,
        )  # fmt: skip
        assert (reply.status, b"MalformedXML" in reply.body) == (400, True), reply.body
    get = await signed(edge.port, "GET", "/", signed_path="/", host=DOMAIN, params={"origin": ""})
    assert get.status == 404
    namespaced = ORIGIN_XML.format(host=ORIGIN_HOST).replace(
        "<OriginConfiguration>",
        '<OriginConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
    )
    reply = await signed(
        edge.port, "PUT", "/", signed_path="/", host=DOMAIN, params={"origin": ""},
        body=namespaced.encode(),
    )  # fmt: skip
    assert reply.status == 200, reply.body
    get = await signed(edge.port, "GET", "/", signed_path="/", host=DOMAIN, params={"origin": ""})
    assert get.body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<OriginConfiguration>')
    assert ET.fromstring(get.body).findtext("OriginRule/OriginInfo/HostInfo/HostName") == (
        ORIGIN_HOST
    )


@pytest_twisted.ensureDeferred
async def test_namespaced_complete_multipart_and_entities(edge):
    """CompleteMultipartUpload in the S3 namespace completes the upload; one with an
    entity-laden DTD is 400 MalformedXML."""
    initiate = await signed(
        edge.port, "POST", "/mp.bin", signed_path="/mp.bin", host=DOMAIN, params={"uploads": ""}
    )
    assert initiate.status == 200
    upload_id = ET.fromstring(initiate.body).findtext("UploadId")
    assert upload_id
    part = await signed(
        edge.port, "PUT", "/mp.bin", signed_path="/mp.bin", host=DOMAIN,
        params={"partNumber": "1", "uploadId": upload_id}, body=b"part one",
    )  # fmt: skip
    etag = part.header("etag")
    assert part.status == 200 and etag
    entity = (
        b'<!DOCTYPE c [<!ENTITY e "' + etag.encode() + b'">]><CompleteMultipartUpload>'
        b"<Part><PartNumber>1</PartNumber><ETag>&e;</ETag></Part></CompleteMultipartUpload>"
    )
    refused = await signed(
        edge.port, "POST", "/mp.bin", signed_path="/mp.bin", host=DOMAIN,
        params={"uploadId": upload_id}, body=entity,
    )  # fmt: skip
    assert (refused.status, b"MalformedXML" in refused.body) == (400, True), refused.body
    body = (
        '<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"<Part><PartNumber>1</PartNumber><ETag>{etag}</ETag></Part></CompleteMultipartUpload>"
    ).encode()
    done = await signed(
        edge.port, "POST", "/mp.bin", signed_path="/mp.bin", host=DOMAIN,
        params={"uploadId": upload_id}, body=body,
    )  # fmt: skip
    assert done.status == 200, done.body
    assert ET.fromstring(done.body).findtext("Key") == "mp.bin"
    assert (edge.data_dir / BUCKET / "mp.bin").read_bytes() == b"part one"


@pytest_twisted.ensureDeferred
async def test_object_subresources_we_lack_are_refused_not_mistaken_for_the_object(edge):
    """A signed `DELETE /key?tagging` used to delete the object and `GET /key?acl` to
    return its bytes: sub-resources this edge lacks are 501 NotImplemented and change
    nothing, while a plain signed GET with an ordinary query still reads the object."""
    (edge.data_dir / BUCKET / "kept.txt").write_bytes(b"still here")
    for method, sub in [("DELETE", "tagging"), ("GET", "acl"), ("HEAD", "acl"), ("PUT", "acl"),
                        ("POST", "restore"), ("GET", "versionId")]:  # fmt: skip
        reply = await signed(
            edge.port, method, "/kept.txt", signed_path="/kept.txt", host=DOMAIN,
            params={sub: ""}, body=b"" if method in ("PUT", "POST") else None,
        )  # fmt: skip
        assert reply.status == 501, (method, sub, reply.status)
    assert (edge.data_dir / BUCKET / "kept.txt").read_bytes() == b"still here"
    plain = await signed(
        edge.port, "GET", "/kept.txt", signed_path="/kept.txt", host=DOMAIN, params={"v": "1"}
    )
    assert plain.status == 200 and plain.body == b"still here"
    anonymous = await request(edge.port, "/kept.txt?acl", host=DOMAIN)
    assert anonymous.status == 403 and b"still here" not in anonymous.body


@pytest_twisted.ensureDeferred
async def test_absolute_form_cannot_carry_a_signature_to_another_bucket(edge):
    """A signature for `DELETE /k` on bucket A (its Host signed) sent as
    `DELETE http://<B's host>/k` with `Host: <A's host>` used to delete B's object: the
    target's authority now replaces the Host header, so the signature is checked against
    B and refused, and B's object stays."""
    from twisted.internet.threads import deferToThread

    from edge.testing.process import raw_request

    (edge.data_dir / OTHER / "k").write_bytes(b"B's object")
    auth = sign(SECRET_ID, SECRET_KEY, "DELETE", "/k", {}, {"host": api_host(BUCKET)})
    status, _, body = await deferToThread(
        raw_request,
        edge.port,
        "DELETE",
        f"http://{api_host(OTHER)}/k",
        {"Host": api_host(BUCKET), "Authorization": auth},
    )
    assert status == 403 and b"SignatureDoesNotMatch" in body
    assert (edge.data_dir / OTHER / "k").read_bytes() == b"B's object"


@pytest_twisted.ensureDeferred
async def test_query_parameters_the_signature_does_not_cover_are_refused(edge):
    """A signature for `DELETE /` (delete bucket) replayed as `DELETE /?origin` used to
    delete the bucket's origin rules: every parameter that is not `q-*` must be signed."""
    put = await signed(
        edge.port, "PUT", "/", signed_path="/", host=DOMAIN, params={"origin": ""},
        body=ORIGIN_XML.format(host=ORIGIN_HOST).encode(),
    )  # fmt: skip
    assert put.status == 200
    auth = sign(SECRET_ID, SECRET_KEY, "DELETE", "/", {}, {"host": DOMAIN})
    replay = await request(
        edge.port, "/?origin", method="DELETE", host=DOMAIN, headers={"Authorization": auth}
    )
    assert replay.status == 403 and b"'origin' is not covered" in replay.body
    kept = await signed(edge.port, "GET", "/", signed_path="/", host=DOMAIN, params={"origin": ""})
    assert kept.status == 200 and ORIGIN_HOST.encode() in kept.body


@pytest_twisted.ensureDeferred
async def test_a_signature_that_expires_while_the_body_uploads_still_stores_it(edge):
    """The signature is checked when the headers arrive, before the body is let in; one
    that expires while a slow body is still coming no longer refuses the upload at the
    end (it used to be checked a second time then)."""
    import socket
    import time

    from twisted.internet.threads import deferToThread

    def slow_put() -> bytes:
        auth = sign(SECRET_ID, SECRET_KEY, "PUT", "/slow.bin", {}, {"host": DOMAIN}, expires=2)
        with socket.create_connection(("127.0.0.1", edge.port), timeout=15) as sock:
            sock.sendall(
                f"PUT /slow.bin HTTP/1.1\r\nHost: {DOMAIN}\r\nAuthorization: {auth}\r\n"
                "Content-Length: 10\r\n\r\nhello".encode()
            )
            time.sleep(3)  # the signature's window ends meanwhile
            sock.sendall(b"world")
            return sock.recv(65536)

    answer = await deferToThread(slow_put)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert (edge.data_dir / BUCKET / "slow.bin").read_bytes() == b"helloworld"


@pytest_twisted.ensureDeferred
async def test_admin_writes_and_multipart_walks_run_off_the_reactor(edge, monkeypatch):
    """The fsyncs of PUT ?origin and PUT/DELETE Bucket, and the part-file walks of abort,
    list parts and list uploads, run in a thread, not on the reactor thread that serves
    every other request."""
    import threading

    from edge.api.buckets import BucketRegistry
    from edge.api.rules import OriginRules
    from edge.store.folder.multipart import MultipartUploads

    threads: dict[str, str] = {}

    def recorded(cls: type, name: str) -> None:
        original = getattr(cls, name)

        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            threads[name] = threading.current_thread().name
            return original(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, wrapper)

    for cls, name in [(OriginRules, "save"), (BucketRegistry, "write_marker"),
                      (BucketRegistry, "remove_marker"), (MultipartUploads, "discard"),
                      (MultipartUploads, "parts"), (MultipartUploads, "uploads")]:  # fmt: skip
        recorded(cls, name)
    origin = await signed(
        edge.port, "PUT", "/", signed_path="/", host=DOMAIN, params={"origin": ""},
        body=ORIGIN_XML.format(host=ORIGIN_HOST).encode(),
    )  # fmt: skip
    assert origin.status == 200
    made = await signed(edge.port, "PUT", "/new-1250000000/", signed_path="/new-1250000000/",
                        host="127.0.0.1", body=b"")  # fmt: skip
    assert made.status == 200
    gone = await signed(edge.port, "DELETE", "/new-1250000000/",
                        signed_path="/new-1250000000/", host="127.0.0.1")  # fmt: skip
    assert gone.status == 204
    init = await signed(edge.port, "POST", "/big.bin", signed_path="/big.bin", host=DOMAIN,
                        params={"uploads": ""}, body=b"")  # fmt: skip
    upload_id = ET.fromstring(init.body).findtext("UploadId")
    assert upload_id
    listed = await signed(edge.port, "GET", "/", signed_path="/", host=DOMAIN,
                          params={"uploads": ""})  # fmt: skip
    parts = await signed(edge.port, "GET", "/big.bin", signed_path="/big.bin", host=DOMAIN,
                         params={"uploadId": upload_id})  # fmt: skip
    aborted = await signed(edge.port, "DELETE", "/big.bin", signed_path="/big.bin",
                           host=DOMAIN, params={"uploadId": upload_id})  # fmt: skip
    assert (listed.status, parts.status, aborted.status) == (200, 200, 204)
    assert set(threads) == {"save", "write_marker", "remove_marker", "discard", "parts",
                            "uploads"}  # fmt: skip
    assert "MainThread" not in threads.values(), threads
