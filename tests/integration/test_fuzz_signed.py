"""Fuzzing the signed management API of a real `twistd cosedge` process with requests that
are correctly signed with the configured key, so they get past authentication and reach the
operations: random keys (traversal segments included), list parameters, header values,
methods, subresources and XML bodies (namespaced, with DTDs and entities).

Whatever the request: never a 5xx, every error body is a COS XML `<Error>`, every XML body
parses, and nothing outside the bucket folder is ever read, written or deleted."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import signal
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.api.signature import sign
from edge.testing.process import start_twistd, wait_ready
from tests.integration.conftest import BUCKET, DOMAIN

SECRET_ID = "AKIDfuzzsigned"
SECRET_KEY = "fuzz-signed-secret"
SECRET = b"TOP-SECRET-OUTSIDE-THE-BUCKET"
SECRET_ETAG = hashlib.md5(SECRET).hexdigest().encode()  # a listing would show it
MARKER = b"marker outside the bucket: must survive"
INSIDE = b"inside the bucket " * 10
API_HOST = f"{BUCKET}.cos.ap-guangzhou.myqcloud.com"
EXAMPLES = 500


@dataclass
class FuzzEdge:
    port: int
    root: Path
    bucket: Path
    outside_before: dict[str, bytes]


def outside_files(root: Path, bucket: Path) -> dict[str, bytes]:
    """Every regular file under `root` but outside the bucket folder and the edge's own
    state (`.cosedge`), with its content."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == bucket or here == root / "data" / ".cosedge":
            dirnames[:] = []
            continue
        for name in filenames:
            path = here / name
            if path.is_file() and not path.is_symlink():
                found[str(path.relative_to(root))] = path.read_bytes()
    return found


@contextlib.contextmanager
def running_edge(root: Path) -> Iterator[FuzzEdge]:
    """A real edge with one bucket and a key for it; outside the bucket folder, a secret
    and a marker next to it and one level up, and a symlink inside the bucket pointing out.
    When the block ends, every file outside the bucket must be exactly as it was."""
    bucket = root / "data" / BUCKET
    (bucket / "a").mkdir(parents=True)
    for folder in (root, root / "data"):
        (folder / "secret").write_bytes(SECRET)
        (folder / "marker").write_bytes(MARKER)
    (bucket / "a" / "file.txt").write_bytes(INSIDE)
    (bucket / "file.txt").write_bytes(INSIDE)
    (bucket / "escape").symlink_to(root)
    config = root / "fuzz.yaml"
    # Origins are loopback port 9 (nothing listens) or IP literals: nothing is resolved by
    # DNS and nothing leaves the machine.
    config.write_text(
        "listen: 'tcp:0:interface=127.0.0.1'\n"
        f"data_dir: {root / 'data'}\n"
        "extra_origin_cidrs: ['127.0.0.1/32']\n"
        f"credentials: [{{secret_id: {SECRET_ID}, secret_key: {SECRET_KEY}}}]\n"
        f"buckets:\n  {BUCKET}:\n    domains: [{DOMAIN}]\n"
        "    origin: {address: '127.0.0.1:9'}\n"
    )
    before = outside_files(root, bucket)
    proc = start_twistd("--config", str(config), cwd=root)
    try:
        port, _ = wait_ready(proc)
        yield FuzzEdge(port, root, bucket, before)
        after = outside_files(root, bucket)
        assert after == before, (
            f"files outside the bucket changed: {sorted(set(after) ^ set(before))}"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def fuzz_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzEdge]:
    """One edge for the whole fuzz run (see `running_edge`)."""
    with running_edge(tmp_path_factory.mktemp("fuzz-signed")) as edge:
        yield edge


# --- what a request is made of ------------------------------------------------------------

raw_segments = st.one_of(
    st.sampled_from(
        [
            "a",
            "file.txt",
            "..",
            ".",
            "",
            "%2e%2e",
            "%2E.",
            "%2f",
            "%2F..%2F",
            "%5c",
            "%00",
            "%01",
            "%1f",
            "%7f",
            "secret",
            "marker",
            "escape",
            "%ff",
            "~",
            "%25",
            "%3F",
            "%23",
            ";x",
            "%20",
            "%C3%A9",
            "%E4%B8%AD",
        ]
    ),  # fmt: skip
    st.text(st.characters(codec="utf-8", exclude_characters="/"), max_size=6).map(
        lambda t: urllib.parse.quote(t, safe="")
    ),
)
raw_keys = st.lists(raw_segments, min_size=0, max_size=5).map("/".join)
free_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
list_params = st.fixed_dictionaries(
    {},
    optional={
        "prefix": st.one_of(free_text, st.sampled_from(["../", "a/", "escape/", "../data/"])),
        "marker": free_text,
        "delimiter": st.sampled_from(["/", "", "a", "é", "\x01"]),
        "max-keys": st.one_of(
            st.integers(-3, 2000).map(str), st.sampled_from(["", "x", "1e3", "٣", " 5"])
        ),
        "encoding-type": st.sampled_from(["url", "", "URL", "x"]),
    },
)
subresources = st.sampled_from(
    [
        {},
        {"origin": ""},
        {"uploads": ""},
        {"uploadId": "@upload"},
        {"uploadId": "@upload", "partNumber": "1"},
        {"uploadId": "zz", "partNumber": "1"},
        {"uploadId": "0" * 32},
        {"partNumber": "x"},
        {"acl": ""},
        {"uploads": "", "prefix": "a"},
    ]
)
header_text = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\0"), max_size=20)
headers = st.fixed_dictionaries(
    {},
    optional={
        "content-type": st.one_of(
            header_text, st.sampled_from(["text/plain", "application/xml", "a/b; c=é"])
        ),
        "x-cos-meta-owner": header_text,
        "x-cos-meta-a-b": header_text,
    },
)

ORIGIN_RULE = (
    "<OriginRule><RulePriority>{priority}</RulePriority><OriginType>{kind}</OriginType>"
    "<OriginCondition><HTTPStatusCode>404</HTTPStatusCode><Prefix>{prefix}</Prefix>"
    "</OriginCondition><OriginInfo><HostInfo><HostName>{host}</HostName></HostInfo>"
    "</OriginInfo></OriginRule>"
)
origin_hosts = st.sampled_from(
    [
        "127.0.0.1:9",
        "202.96.128.86",
        "10.0.0.1",
        "[::1]",
        "localhost",
        "999.1.1.1",
        "bad host",
        "",
        "http://1.2.3.4",
        "1.2.3.4/x",
        "a@1.2.3.4",
        "1.2.3.4:99999",
    ]
)  # fmt: skip  (IP literals and names that never reach DNS)
xml_escape = st.sampled_from(["&amp;", "&lt;", "&#1;", "&#x10FFFF;", "é", "../", ""])


@st.composite
def origin_bodies(draw: st.DrawFn) -> bytes:
    rules = draw(
        st.lists(
            st.builds(
                ORIGIN_RULE.format,
                priority=st.sampled_from(["1", "2", "0", "x", ""]),
                kind=st.sampled_from(["Proxy", "Redirect", "Mirror", ""]),
                prefix=xml_escape,
                host=origin_hosts,
            ),
            max_size=3,
        )
    )
    ns = draw(st.sampled_from(["", ' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"']))
    return f"<OriginConfiguration{ns}>{''.join(rules)}</OriginConfiguration>".encode()


@st.composite
def complete_bodies(draw: st.DrawFn) -> bytes:
    parts = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["1", "2", "x", "", "99999"]),
                st.sampled_from(['"@etag"', "@etag", '"' + "0" * 32 + '"', ""]),
            ),
            max_size=3,
        )
    )
    ns = draw(st.sampled_from(["", ' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"']))
    inner = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>" for n, e in parts)
    return f"<CompleteMultipartUpload{ns}>{inner}</CompleteMultipartUpload>".encode()


HOSTILE_XML = [
    b'<!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><OriginConfiguration>&c;</OriginConfiguration>',
    b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><CompleteMultipartUpload>&e;'
    b"</CompleteMultipartUpload>",
    b'<!DOCTYPE x [<!ENTITY e SYSTEM "../secret">]><OriginConfiguration>&e;</OriginConfiguration>',
    b'<!DOCTYPE x SYSTEM "http://127.0.0.1:9/x.dtd"><OriginConfiguration/>',
    b'<?xml version="1.0" encoding="UTF-16"?><a/>',
    b"<OriginConfiguration>",
    b"\xff\xfe\x00<",
    b"",
]
bodies = st.one_of(
    st.none(),
    origin_bodies(),
    complete_bodies(),
    st.sampled_from(HOSTILE_XML),
    st.binary(max_size=64),
)


@dataclass(frozen=True)
class Sent:
    method: str
    target: str
    headers: dict[str, bytes]
    body: bytes | None


def signed_request(
    port: int,
    method: str,
    style: str,
    raw_key: str,
    params: dict[str, str],
    extra: dict[str, str],
    body: bytes | None,
    presigned: bool,
) -> Sent:
    """Build a request signed exactly as the edge verifies it: the Host signed when it names
    the bucket, the whole decoded path for path style, every query parameter signed."""
    if style == "path":
        host, raw_path = f"127.0.0.1:{port}", f"/{BUCKET}/{raw_key}"
    elif style == "service":
        host, raw_path = f"127.0.0.1:{port}", "/"
    else:
        host, raw_path = (DOMAIN if style == "domain" else API_HOST), f"/{raw_key}"
    signed_path = urllib.parse.unquote_to_bytes(raw_path).decode("utf-8", "replace")
    to_sign = {"host": host}
    values: dict[str, bytes] = {}
    for name, value in extra.items():
        encoded = value.encode("utf-8").strip()  # the server strips surrounding whitespace
        values[name] = encoded
        to_sign[name] = encoded.decode("utf-8", "replace")
    auth = sign(SECRET_ID, SECRET_KEY, method, signed_path, params, to_sign, expires=300)
    query = "&".join(
        f"{urllib.parse.quote(k, safe='')}={urllib.parse.quote(v, safe='')}"
        for k, v in params.items()
    )
    sent_headers = {"Host": host.encode(), **values}
    if presigned:
        signature_query = urllib.parse.urlencode(dict(urllib.parse.parse_qsl(auth)))
        query = f"{query}&{signature_query}" if query else signature_query
    else:
        sent_headers["Authorization"] = auth.encode()
    target = raw_path + (f"?{query}" if query else "")
    return Sent(method, target, sent_headers, body)


def send(port: int, sent: Sent) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.putrequest(sent.method, sent.target, skip_host=True, skip_accept_encoding=True)
        for name, value in sent.headers.items():
            conn.putheader(name, value)
        if sent.body is not None:
            conn.putheader("Content-Length", str(len(sent.body)))
        conn.endheaders(sent.body)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def start_upload(edge: FuzzEdge, style: str, raw_key: str) -> tuple[str, str]:
    """Initiate an upload of the key and put part 1; returns (upload id, part ETag), or
    blanks when the key cannot have one."""
    start = signed_request(edge.port, "POST", style, raw_key, {"uploads": ""}, {}, None, False)
    status, _, body = send(edge.port, start)
    if status != 200:
        return "", ""
    upload_id = ET.fromstring(body).findtext("UploadId") or ""
    part = signed_request(
        edge.port, "PUT", style, raw_key, {"uploadId": upload_id, "partNumber": "1"}, {},
        b"part", False,
    )  # fmt: skip
    status, reply_headers, _ = send(edge.port, part)
    return upload_id, reply_headers.get("etag", "").strip('"') if status == 200 else ""


examples = 0


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # nothing written into the checkout; failures print their example
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method=st.sampled_from(["GET", "HEAD", "PUT", "DELETE", "POST", "GET", "PUT"]),
    style=st.sampled_from(["domain", "api", "path", "service"]),
    raw_key=raw_keys,
    sub=subresources,
    listing=list_params,
    extra=headers,
    body=bodies,
    presigned=st.booleans(),
)
def test_signed_requests_never_500_never_outside(
    fuzz_edge, method, style, raw_key, sub, listing, extra, body, presigned
):
    """A correctly signed request of any shape gets a non-5xx answer whose error body is
    COS XML, and no byte of the secret outside the bucket."""
    global examples
    examples += 1
    params = {**listing, **sub}
    if "@upload" in params.values():
        upload_id, etag = start_upload(fuzz_edge, style, raw_key)
        params = {k: (upload_id if v == "@upload" else v) for k, v in params.items()}
        if body is not None:
            body = body.replace(b"@etag", etag.encode())
    sent = signed_request(fuzz_edge.port, method, style, raw_key, params, extra, body, presigned)
    status, reply_headers, reply = send(fuzz_edge.port, sent)
    where = (sent, status, reply[:300])
    # 501 NotImplemented is COS's own answer for a feature the edge does not offer (?acl,
    # ?uploadId on a bucket, Copy): a refusal by design, not a failure.
    not_implemented = status == 501 and (method == "HEAD" or b"<Code>NotImplemented<" in reply)
    assert status < 500 or not_implemented, where
    assert SECRET not in reply, where
    assert reply_headers.get("x-cos-request-id"), where
    if status >= 400 and method != "HEAD":
        error = ET.fromstring(reply)  # COS XML, never an HTML page
        assert error.tag == "Error" and error.findtext("Code"), where
    elif reply.startswith(b"<?xml"):
        document = ET.fromstring(reply)  # every document the edge writes parses
        # Keys the edge lists come from the bucket folder: none climbs out of it.
        for node in [
            *document.iterfind("Contents/Key"),
            *document.iterfind("CommonPrefixes/Prefix"),
        ]:
            text = urllib.parse.unquote(node.text or "")
            assert not text.startswith("/") and ".." not in text.split("/"), where
    assert SECRET_ETAG not in reply, where


def test_examples_ran():
    """The fuzz above really ran its examples (reported in the test's output)."""
    print(f"signed fuzz examples: {examples}")
    assert examples >= 100


# What the fuzz found outside this branch's files, as fixed requests, so each finding fails
# every run (not only the runs whose random examples hit it) until its fix lands.
FINDINGS = {
    # Twisted's Request.requestReceived parses a POST's Content-Type with email.message,
    # which raises on a character str.splitlines() splits at: no response at all.
    "post-content-type-line-break": ("POST", "", {}, {"content-type": "a\x0cb"}, b"<a/>"),
    # Writes and deletes follow a symlink inside the bucket folder out of it.
    "delete-through-symlink": ("DELETE", "escape/marker", {}, {}, None),
    "put-through-symlink": ("PUT", "escape/created.txt", {}, {}, b"x"),
    # A listing prefix climbs out of the bucket folder.
    "list-parent-folder": ("GET", "", {"prefix": "../", "delimiter": "/"}, {}, None),
}


@pytest.mark.parametrize("finding", sorted(FINDINGS))
def test_fuzz_findings(tmp_path: Path, finding: str) -> None:
    """Each request the fuzz found a failure with, replayed on a fresh edge: an answer below
    500, no key outside the bucket listed, and nothing outside the bucket changed."""
    method, raw_key, params, extra, body = FINDINGS[finding]
    with running_edge(tmp_path) as edge:
        # Something for the edge's own state folder (.cosedge/uploads/) to hold.
        start_upload(edge, "domain", "a/file.txt")
        sent = signed_request(edge.port, method, "domain", raw_key, params, extra, body, False)
        status, _, reply = send(edge.port, sent)
        assert status < 500, (status, reply)
        if reply.startswith(b"<?xml"):
            for node in ET.fromstring(reply).iterfind("CommonPrefixes/Prefix"):
                assert ".." not in (node.text or "").split("/"), reply
