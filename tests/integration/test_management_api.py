"""The signed management API driven by Tencent's own `cos-python-sdk-v5`, configured the way
a COS user points it at a self-hosted endpoint: `CosConfig(IP=..., Port=..., Scheme="http")`.

The SDK is synchronous (requests), so every call runs in a thread while the edge runs in the
test's reactor.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest_twisted
from qcloud_cos import CosConfig, CosS3Client
from qcloud_cos.cos_exception import CosServiceError
from twisted.internet.threads import deferToThread

from edge.api.signature import sign
from tests.integration.conftest import BUCKET, DOMAIN, request, wait_until

SECRET_ID = "AKIDcosedgeIntegration"
SECRET_KEY = "integration-secret"
LIMITED_ID = "AKIDlimited"
CREDENTIALS = [
    {"secret_id": SECRET_ID, "secret_key": SECRET_KEY},
    {"secret_id": LIMITED_ID, "secret_key": "limited", "buckets": ["other-1250000000"]},
]


def client(port: int, secret_id: str = SECRET_ID, secret_key: str = SECRET_KEY) -> CosS3Client:
    config = CosConfig(
        Region="ap-guangzhou",
        SecretId=secret_id,
        SecretKey=secret_key,
        IP="127.0.0.1",
        Port=port,
        Scheme="http",
    )
    return CosS3Client(config, retry=0)


async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await deferToThread(fn, *args, **kwargs)


async def service_error(fn: Any, *args: Any, **kwargs: Any) -> CosServiceError:
    try:
        await call(fn, *args, **kwargs)
    except CosServiceError as e:
        return e
    raise AssertionError("expected a COS service error")


def origin_xml(*rules: dict[str, Any]) -> dict[str, Any]:
    """The SDK's dict form of OriginConfiguration."""
    return {
        "OriginRule": [
            {
                "RulePriority": str(r.get("priority", i + 1)),
                "OriginType": r.get("type", "Proxy"),
                "OriginCondition": {"HTTPStatusCode": "404", "Prefix": r.get("prefix", "")},
                "OriginParameter": {
                    "Protocol": "HTTP",
                    "FollowQueryString": "true",
                    "HttpRedirectCode": str(r.get("code", 302)),
                },
                "OriginInfo": {"HostInfo": {"HostName": r["host"]}},
            }
            for i, r in enumerate(rules)
        ]
    }


@pytest_twisted.async_fixture
async def api_edge(edges):
    return await edges.start(edges.config(None, credentials=CREDENTIALS))


@pytest_twisted.ensureDeferred
async def test_objects_put_get_head_list_delete(api_edge):
    """PUT keeps Content-Type and x-cos-meta-*; GET/HEAD return them; list pages with
    prefix/delimiter/marker; DELETE removes the object, its metadata and empty folders."""
    cos = client(api_edge.port)
    body = b"hello from the SDK\n"
    put = await call(
        cos.put_object,
        Bucket=BUCKET,
        Key="docs/a b/中文.txt",
        Body=body,
        ContentType="text/x-custom",
        Metadata={"x-cos-meta-owner": "ops"},
        EnableMD5=True,
    )
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    got = await call(cos.get_object, Bucket=BUCKET, Key="docs/a b/中文.txt")
    assert got["Body"].get_raw_stream().read() == body
    got.pop("Body")
    # COS spells its own headers in lower case and SDK users index a plain dict that way.
    assert got["x-cos-meta-owner"] == "ops"
    assert got["x-cos-request-id"]
    assert got["Content-Type"] == "text/x-custom"
    head = await call(cos.head_object, Bucket=BUCKET, Key="docs/a b/中文.txt")
    assert head["Content-Length"] == str(len(body)) and head["x-cos-meta-owner"] == "ops"
    on_disk = api_edge.data_dir / BUCKET / "docs" / "a b" / "中文.txt"
    assert on_disk.read_bytes() == body  # a plain file at its key
    assert not list((api_edge.data_dir / BUCKET).rglob("*.json"))  # metadata elsewhere

    for key in ("docs/b.txt", "docs/c/d.txt", "top.txt"):
        await call(cos.put_object, Bucket=BUCKET, Key=key, Body=key.encode())
    listing = await call(cos.list_objects, Bucket=BUCKET, Prefix="docs/", Delimiter="/")
    assert [c["Key"] for c in listing["Contents"]] == ["docs/b.txt"]
    assert [p["Prefix"] for p in listing["CommonPrefixes"]] == ["docs/a b/", "docs/c/"]
    page = await call(cos.list_objects, Bucket=BUCKET, MaxKeys=2)
    assert page["IsTruncated"] == "true"
    assert [c["Key"] for c in page["Contents"]] == ["docs/a b/中文.txt", "docs/b.txt"]
    rest = await call(cos.list_objects, Bucket=BUCKET, Marker=page["NextMarker"])
    assert [c["Key"] for c in rest["Contents"]] == ["docs/c/d.txt", "top.txt"]
    assert rest["IsTruncated"] == "false"
    entry = page["Contents"][1]
    assert entry["Size"] == "10" and entry["ETag"] == f'"{hashlib.md5(b"docs/b.txt").hexdigest()}"'

    await call(cos.delete_object, Bucket=BUCKET, Key="docs/a b/中文.txt")
    assert not on_disk.exists() and not on_disk.parent.exists()
    error = await service_error(cos.head_object, Bucket=BUCKET, Key="docs/a b/中文.txt")
    assert error.get_status_code() == 404


@pytest_twisted.ensureDeferred
async def test_bad_content_md5_stores_nothing(api_edge):
    """A PUT whose Content-MD5 does not match the body is refused with BadDigest: no object
    appears at the key and no temp file is left in .cosedge/tmp."""
    cos = client(api_edge.port)
    error = await service_error(
        cos.put_object,
        Bucket=BUCKET,
        Key="x.txt",
        Body=b"abc",
        ContentMD5="AAAAAAAAAAAAAAAAAAAAAA==",
    )
    assert error.get_error_code() == "BadDigest"
    assert not (api_edge.data_dir / BUCKET / "x.txt").exists()
    assert list((api_edge.data_dir / ".cosedge" / "tmp").iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_wrong_credentials_are_refused(api_edge):
    """A wrong secret key is refused with 403 SignatureDoesNotMatch, an unknown SecretId with 403
    InvalidAccessKeyId and a key limited to another bucket with 403 AccessDenied, and these
    signed PUTs store nothing; an unsigned PUT is refused with 403 AccessDenied."""
    wrong = client(api_edge.port, secret_key="not-the-key")
    error = await service_error(wrong.put_object, Bucket=BUCKET, Key="w.txt", Body=b"x")
    assert (error.get_status_code(), error.get_error_code()) == (403, "SignatureDoesNotMatch")
    unknown = client(api_edge.port, secret_id="AKIDnobody")
    error = await service_error(unknown.list_objects, Bucket=BUCKET)
    assert (error.get_status_code(), error.get_error_code()) == (403, "InvalidAccessKeyId")
    limited = client(api_edge.port, LIMITED_ID, "limited")
    error = await service_error(limited.put_object, Bucket=BUCKET, Key="w.txt", Body=b"x")
    assert (error.get_status_code(), error.get_error_code()) == (403, "AccessDenied")
    assert not (api_edge.data_dir / BUCKET / "w.txt").exists()
    anonymous = await request(api_edge.port, "/w.txt", method="PUT", body=b"x")
    assert anonymous.status == 403 and b"AccessDenied" in anonymous.body


@pytest_twisted.ensureDeferred
async def test_buckets_create_head_delete(api_edge):
    """A bucket made through the API gets a folder and answers HEAD; a second create is
    BucketAlreadyExists, deleting it while it holds an object is 409 BucketNotEmpty, and once
    emptied it is deleted and HEAD answers 404. Deleting a configured bucket is AccessDenied,
    and a signed GET Service then lists the configured bucket only."""
    cos = client(api_edge.port)
    await call(cos.create_bucket, Bucket="made-1250000000")
    assert (api_edge.data_dir / "made-1250000000").is_dir()
    await call(cos.head_bucket, Bucket="made-1250000000")
    error = await service_error(cos.create_bucket, Bucket="made-1250000000")
    assert error.get_error_code() == "BucketAlreadyExists"
    await call(cos.put_object, Bucket="made-1250000000", Key="k", Body=b"v")
    error = await service_error(cos.delete_bucket, Bucket="made-1250000000")
    assert (error.get_status_code(), error.get_error_code()) == (409, "BucketNotEmpty")
    await call(cos.delete_object, Bucket="made-1250000000", Key="k")
    await call(cos.delete_bucket, Bucket="made-1250000000")
    error = await service_error(cos.head_bucket, Bucket="made-1250000000")
    assert error.get_status_code() == 404
    error = await service_error(cos.delete_bucket, Bucket=BUCKET)
    assert error.get_error_code() == "AccessDenied"  # configured buckets stay
    # GET Service (the SDK's list_buckets ignores IP= and goes to service.cos.myqcloud.com,
    # so it is signed by hand here: tests talk to loopback only).
    auth = sign(SECRET_ID, SECRET_KEY, "GET", "/", {}, {})
    service = await request(api_edge.port, "/", host=None, headers={"Authorization": auth})
    assert service.status == 200
    assert service.body.count(b"<Name>") == 1 and f"<Name>{BUCKET}</Name>".encode() in service.body


@pytest_twisted.ensureDeferred
async def test_origin_rules_put_get_delete_and_proxy(api_edge, origin):
    """A Proxy rule set through the API answers a miss with 302 and copies the object."""
    cos = client(api_edge.port)
    error = await service_error(cos.get_bucket_origin, Bucket=BUCKET)
    assert error.get_status_code() == 404
    origin.serve("/img/cat.jpg", body=b"meow")
    await call(
        cos.put_bucket_origin,
        Bucket=BUCKET,
        OriginConfiguration=origin_xml({"host": origin.address}),
    )
    rules = await call(cos.get_bucket_origin, Bucket=BUCKET)
    assert rules["OriginRule"][0]["OriginInfo"]["HostInfo"]["HostName"] == origin.address
    assert rules["OriginRule"][0]["OriginType"] == "Proxy"
    miss = await api_edge.get("img/cat.jpg")
    assert miss.status == 302 and miss.header("location") == f"http://{origin.address}/img/cat.jpg"
    await api_edge.copies_done()
    assert (await api_edge.get("img/cat.jpg")).body == b"meow"
    await call(cos.delete_bucket_origin, Bucket=BUCKET)
    assert (await api_edge.get("img/dog.jpg")).status == 404


@pytest_twisted.ensureDeferred
async def test_redirect_rule_copies_nothing_and_prefix_rules_choose(api_edge, origin, edges):
    """Rules by priority then prefix: `a/` goes to a Redirect rule (307, nothing copied),
    everything else to the Proxy rule."""
    cos = client(api_edge.port)
    origin.serve("/a/x.txt", body=b"A")
    origin.serve("/b/y.txt", body=b"B")
    await call(
        cos.put_bucket_origin,
        Bucket=BUCKET,
        OriginConfiguration=origin_xml(
            {"host": origin.address, "priority": 2},
            {
                "host": f"localhost:{origin.port}",
                "priority": 1,
                "prefix": "a/",
                "type": "Redirect",
                "code": 307,
            },
        ),
    )
    redirected = await api_edge.get("a/x.txt?v=1")
    assert redirected.status == 307
    assert redirected.header("location") == f"http://localhost:{origin.port}/a/x.txt?v=1"
    proxied = await api_edge.get("b/y.txt")
    assert proxied.status == 302
    await api_edge.copies_done()
    assert (api_edge.data_dir / BUCKET / "b" / "y.txt").read_bytes() == b"B"
    assert not (api_edge.data_dir / BUCKET / "a" / "x.txt").exists()
    assert [r.path for r in origin.requests] == ["/b/y.txt"]


@pytest_twisted.ensureDeferred
async def test_refused_origins_get_400(edges):
    """Loopback, private and unresolvable origins are refused with InvalidArgument naming
    the address, exactly as a config file would be; so is a standby IP outside the tables."""
    edge = await edges.start(edges.config(None, extra=[], credentials=CREDENTIALS))
    cos = client(edge.port)
    for host, words in (
        ("127.0.0.1:8080", "127.0.0.1: loopback address"),
        ("10.1.2.3", "10.1.2.3: private address"),
        ("8.8.8.8", "8.8.8.8: not in any ISP table"),
        ("localhost", "loopback address"),
    ):
        error = await service_error(
            cos.put_bucket_origin, Bucket=BUCKET, OriginConfiguration=origin_xml({"host": host})
        )
        assert (error.get_status_code(), error.get_error_code()) == (400, "InvalidArgument")
        assert words in error.get_error_msg(), error.get_error_msg()
    standby = origin_xml({"host": "202.96.128.86"})
    standby["OriginRule"][0]["OriginInfo"]["HostInfo"]["StandbyHostName_1"] = "10.1.2.3"
    error = await service_error(cos.put_bucket_origin, Bucket=BUCKET, OriginConfiguration=standby)
    assert "standby origin 10.1.2.3 is not accepted (10.1.2.3: private address)" in (
        error.get_error_msg()
    )
    await call(
        cos.put_bucket_origin,
        Bucket=BUCKET,
        OriginConfiguration=origin_xml({"host": "202.96.128.86:8080"}),
    )


@pytest_twisted.ensureDeferred
async def test_rules_and_buckets_survive_restart(edges, origin, tmp_path: Path):
    """Origin rules, buckets and object metadata set through the API outlive a restart on the
    same data folder: the object keeps its Content-Type, a miss under the rule's `p/` prefix
    still gets 302 while one outside it gets 404, and the API-made bucket answers HEAD."""
    config = edges.config(None, credentials=CREDENTIALS)
    first = await edges.start(config)
    cos = client(first.port)
    await call(
        cos.put_bucket_origin,
        Bucket=BUCKET,
        OriginConfiguration=origin_xml({"host": origin.address, "prefix": "p/"}),
    )
    await call(cos.create_bucket, Bucket="later-1250000000")
    await call(cos.put_object, Bucket=BUCKET, Key="typed", Body=b"{}", ContentType="text/x-kept")
    await first.stop()
    second = await edges.start(config)
    typed = await second.get("typed")
    assert typed.header("content-type") == "text/x-kept"  # metadata survives too
    assert (await second.get("p/q.txt")).status == 302
    assert (await second.get("other.txt")).status == 404  # the rule has a prefix
    await call(client(second.port).head_bucket, Bucket="later-1250000000")


@pytest_twisted.ensureDeferred
async def test_yaml_origin_is_one_proxy_rule(edges, origin):
    """SPEC §7: `origin:` in the YAML reads back as one Proxy rule, 404, no prefix, 302."""
    edge = await edges.start(edges.config(origin.address, credentials=CREDENTIALS))
    rules = await call(client(edge.port).get_bucket_origin, Bucket=BUCKET)
    (rule,) = rules["OriginRule"]
    assert (
        rule["OriginType"] == "Proxy"
        and rule["OriginCondition"]["Prefix"] is None
        or rule["OriginCondition"]["Prefix"] == ""
    )
    assert rule["OriginParameter"]["HttpRedirectCode"] == "302"
    assert rule["OriginParameter"]["FollowQueryString"] == "true"


@pytest_twisted.ensureDeferred
async def test_presigned_url_reads_private_listing_and_expires(api_edge):
    """A pre-signed URL (signature in the query) authorises a listing; an expired one is
    refused with 403. The Host names the bucket, so the URL signs it (as the SDK does)."""
    (api_edge.data_dir / BUCKET / "f.txt").write_bytes(b"f")
    auth = sign(SECRET_ID, SECRET_KEY, "GET", "/", {}, {"host": DOMAIN})
    ok = await request(api_edge.port, f"/?{auth}")
    assert ok.status == 200 and b"<Key>f.txt</Key>" in ok.body
    old = sign(SECRET_ID, SECRET_KEY, "GET", "/", {}, {"host": DOMAIN}, now=1_000_000_000)
    expired = await request(api_edge.port, f"/?{old}")
    assert expired.status == 403 and b"expired" in expired.body
    anonymous = await request(api_edge.port, "/")
    assert anonymous.status == 403


@pytest_twisted.ensureDeferred
async def test_signed_get_miss_still_goes_to_origin(api_edge, origin):
    """With a Proxy rule set through the API, a signed SDK GET of a missing key is answered with
    a redirect whose Location is the origin's URL for the key, and the object is then copied
    into the bucket's folder."""
    cos = client(api_edge.port)
    await call(
        cos.put_bucket_origin,
        Bucket=BUCKET,
        OriginConfiguration=origin_xml({"host": origin.address}),
    )
    origin.serve("/s.txt", body=b"signed")
    answer = await call(cos.get_object, Bucket=BUCKET, Key="s.txt")  # the SDK takes a 3xx
    headers = {k.lower(): v for k, v in answer.items() if k != "Body"}
    assert headers["location"] == f"http://{origin.address}/s.txt"
    await wait_until(lambda: (api_edge.data_dir / BUCKET / "s.txt").exists())


@pytest_twisted.ensureDeferred
async def test_large_upload_is_spooled_once_and_aborted_upload_leaves_nothing(api_edge):
    """A large PUT is written straight into .cosedge/tmp and renamed into place; a signed
    client that disconnects mid-body leaves no temp file."""
    import socket

    cos = client(api_edge.port)
    body = bytes(range(256)) * 8192  # 2 MiB
    put = await call(cos.put_object, Bucket=BUCKET, Key="big.bin", Body=body, EnableMD5=True)
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    assert (api_edge.data_dir / BUCKET / "big.bin").read_bytes() == body
    tmp = api_edge.data_dir / ".cosedge" / "tmp"
    assert list(tmp.iterdir()) == []

    def send_half() -> bool:
        import time

        with socket.create_connection(("127.0.0.1", api_edge.port)) as sock:
            auth = sign(SECRET_ID, SECRET_KEY, "PUT", f"/{BUCKET}/half.bin", {}, {})
            sock.sendall(
                f"PUT /{BUCKET}/half.bin HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
                "Content-Length: 1048576\r\n\r\n".encode()
                + b"x" * 200_000
            )
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if any(p.suffix == ".part" for p in tmp.iterdir()):
                    return True  # the body is being spooled into the store's temp folder
                time.sleep(0.02)
            return False

    assert await deferToThread(send_half)
    await wait_until(lambda: list(tmp.iterdir()) == [])
    assert not (api_edge.data_dir / BUCKET / "half.bin").exists()


@pytest_twisted.ensureDeferred
async def test_prefix_rules_choose_between_two_origins(api_edge, origin):
    """Two Proxy rules, two origins: `img/` keys (priority 1) are copied from one, the rest
    (priority 2, no prefix) from the other; each origin sees only its own keys."""
    from twisted.internet import reactor

    from edge.testing.origin import FakeOrigin

    second = FakeOrigin(reactor)
    port = reactor.listenTCP(0, second.factory(), interface="127.0.0.1")
    try:
        second_address = f"127.0.0.1:{port.getHost().port}"
        origin.serve("/img/p.png", body=b"from images origin")
        second.serve("/css/s.css", body=b"from main origin")
        await call(
            client(api_edge.port).put_bucket_origin,
            Bucket=BUCKET,
            OriginConfiguration=origin_xml(
                {"host": second_address, "priority": 2},
                {"host": origin.address, "priority": 1, "prefix": "img/"},
            ),
        )
        first_miss = await api_edge.get("img/p.png")
        assert first_miss.header("location") == f"http://{origin.address}/img/p.png"
        second_miss = await api_edge.get("css/s.css")
        assert second_miss.header("location") == f"http://{second_address}/css/s.css"
        await api_edge.copies_done()
        assert (await api_edge.get("img/p.png")).body == b"from images origin"
        assert (await api_edge.get("css/s.css")).body == b"from main origin"
        assert [r.path for r in origin.requests] == ["/img/p.png"]
        assert [r.path for r in second.requests] == ["/css/s.css"]
    finally:
        second.drop_all()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_sdk_upload_file_multipart_and_resume(api_edge, tmp_path):
    """The SDK's `upload_file` sends anything over one part (1 MiB) as a multipart upload:
    list uploads, initiate, parts in parallel, complete. A leftover upload of the same key is
    listed with its parts and taken up by the SDK's resume logic; a wrong ETag in Complete
    is InvalidPart; abort removes the upload. Nothing of an upload is left under .cosedge
    afterwards."""
    cos = client(api_edge.port)
    payload = os.urandom(3 * 2**20 + 12345)
    local = tmp_path / "big.bin"
    local.write_bytes(payload)
    await call(
        cos.upload_file,
        Bucket=BUCKET,
        Key="up/big.bin",
        LocalFilePath=str(local),
        PartSize=1,
        MAXThread=3,
    )
    assert (api_edge.data_dir / BUCKET / "up" / "big.bin").read_bytes() == payload
    assert (await api_edge.get("up/big.bin")).body == payload

    # A half-done upload of the same key is found and resumed.
    started = await call(cos.create_multipart_upload, Bucket=BUCKET, Key="up/again.bin")
    upload_id = started["UploadId"]
    await call(
        cos.upload_part,
        Bucket=BUCKET,
        Key="up/again.bin",
        Body=payload[: 2**20],
        PartNumber=1,
        UploadId=upload_id,
    )
    listed = await call(cos.list_multipart_uploads, Bucket=BUCKET, Prefix="up/again.bin")
    assert [u["UploadId"] for u in listed["Upload"]] == [upload_id]
    parts = await call(cos.list_parts, Bucket=BUCKET, Key="up/again.bin", UploadId=upload_id)
    assert [p["PartNumber"] for p in parts["Part"]] == ["1"]
    await call(
        cos.upload_file,
        Bucket=BUCKET,
        Key="up/again.bin",
        LocalFilePath=str(local),
        PartSize=1,
        MAXThread=2,
    )
    assert (api_edge.data_dir / BUCKET / "up" / "again.bin").read_bytes() == payload

    # Wrong ETag, then abort.
    third = (await call(cos.create_multipart_upload, Bucket=BUCKET, Key="x.bin"))["UploadId"]
    await call(
        cos.upload_part, Bucket=BUCKET, Key="x.bin", Body=b"abc", PartNumber=1, UploadId=third
    )
    error = await service_error(
        cos.complete_multipart_upload,
        Bucket=BUCKET,
        Key="x.bin",
        UploadId=third,
        MultipartUpload={"Part": [{"PartNumber": 1, "ETag": '"' + "0" * 32 + '"'}]},
    )
    assert (error.get_status_code(), error.get_error_code()) == (400, "InvalidPart")
    await call(cos.abort_multipart_upload, Bucket=BUCKET, Key="x.bin", UploadId=third)
    error = await service_error(cos.list_parts, Bucket=BUCKET, Key="x.bin", UploadId=third)
    assert error.get_error_code() == "NoSuchUpload"
    assert not (api_edge.data_dir / BUCKET / "x.bin").exists()
    assert list((api_edge.data_dir / ".cosedge" / "uploads").iterdir()) == []
    assert list((api_edge.data_dir / ".cosedge" / "tmp").iterdir()) == []
