"""SPEC §3: hits, headers, ranges, conditionals, errors and key safety, on a live edge."""

from __future__ import annotations

import hashlib
import os

import pytest
import pytest_twisted

from tests.integration.conftest import BUCKET, DOMAIN, request


@pytest.fixture
def body() -> bytes:
    return bytes(range(256)) * 40  # 10240 bytes


async def _edge_with_file(edges, body: bytes, key: str = "docs/report.pdf"):
    edge = await edges.start(edges.config(None))
    path = edge.data_dir / BUCKET / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return edge


@pytest_twisted.ensureDeferred
async def test_get_hit_headers(edges, body):
    """A dropped-in file is served with Content-Length, Content-Type by extension, quoted
    MD5 ETag, Last-Modified, Accept-Ranges and the request id."""
    edge = await _edge_with_file(edges, body)
    reply = await edge.get("docs/report.pdf")
    assert reply.status == 200
    assert reply.body == body
    assert reply.header("content-length") == str(len(body))
    assert reply.header("content-type") == "application/pdf"
    assert reply.header("etag") == f'"{hashlib.md5(body).hexdigest()}"'
    assert reply.header("last-modified").endswith("GMT")
    assert reply.header("accept-ranges") == "bytes"
    assert len(reply.header("x-cos-request-id")) > 8


@pytest_twisted.ensureDeferred
async def test_unknown_extension_is_octet_stream_and_head_has_no_body(edges, body):
    """Unknown extensions are application/octet-stream; HEAD gives the headers, no body."""
    edge = await _edge_with_file(edges, body, "blob.zzz")
    reply = await edge.get("blob.zzz", method="HEAD")
    assert reply.status == 200
    assert reply.header("content-type") == "application/octet-stream"
    assert reply.header("content-length") == str(len(body))


@pytest_twisted.ensureDeferred
async def test_ranges(edges, body):
    """Single byte ranges give 206 + Content-Range (first-last, open, suffix); ranges
    past the end give 416 with `bytes */size`; multiple ranges fall back to 200."""
    edge = await _edge_with_file(edges, body)
    size = len(body)
    r = await edge.get("docs/report.pdf", headers={"Range": "bytes=10-19"})
    assert (r.status, r.body, r.header("content-range")) == (
        206,
        body[10:20],
        f"bytes 10-19/{size}",
    )
    r = await edge.get("docs/report.pdf", headers={"Range": "bytes=10000-"})
    assert (r.status, r.body) == (206, body[10000:])
    r = await edge.get("docs/report.pdf", headers={"Range": "bytes=-5"})
    assert (r.status, r.body, r.header("content-range")) == (
        206,
        body[-5:],
        f"bytes {size - 5}-{size - 1}/{size}",
    )
    r = await edge.get("docs/report.pdf", headers={"Range": f"bytes={size}-"})
    assert r.status == 416 and r.header("content-range") == f"bytes */{size}"
    assert b"InvalidRange" in r.body
    r = await edge.get("docs/report.pdf", headers={"Range": "bytes=0-1,5-6"})
    assert r.status == 200 and r.body == body


@pytest_twisted.ensureDeferred
async def test_conditionals(edges, body):
    """If-None-Match with the ETag and If-Modified-Since at/after Last-Modified give 304;
    a stale If-Match gives 412."""
    edge = await _edge_with_file(edges, body)
    first = await edge.get("docs/report.pdf")
    etag, modified = first.header("etag"), first.header("last-modified")
    r = await edge.get("docs/report.pdf", headers={"If-None-Match": etag})
    assert r.status == 304 and r.body == b""
    r = await edge.get("docs/report.pdf", headers={"If-Modified-Since": modified})
    assert r.status == 304
    r = await edge.get("docs/report.pdf", headers={"If-None-Match": '"other"'})
    assert r.status == 200
    r = await edge.get("docs/report.pdf", headers={"If-Match": '"other"'})
    assert r.status == 412 and b"PreconditionFailed" in r.body


@pytest_twisted.ensureDeferred
async def test_changed_file_gets_new_etag(edges, body):
    """An operator replacing a file gets a fresh ETag, not the cached one."""
    edge = await _edge_with_file(edges, body, "v.txt")
    old = (await edge.get("v.txt")).header("etag")
    path = edge.data_dir / BUCKET / "v.txt"
    path.write_bytes(b"new content")
    os.utime(path, (1, 1))
    new = await edge.get("v.txt")
    assert new.body == b"new content"
    assert new.header("etag") == f'"{hashlib.md5(b"new content").hexdigest()}"' != old


@pytest.mark.parametrize(
    "path",
    [
        "/../secret",
        "/a/../../secret",
        "/%2e%2e/secret",
        "/a/%2E%2E/%2e%2e/secret",
        "/..%2fsecret",
        "/a%2f..%2f..%2fsecret",
        "/a/./b",
        "/a%00b",
        "/a%5c..%5csecret",
        "/a\\b",
        "/a//b",
        "/%ff%fe",
    ],
)
@pytest_twisted.ensureDeferred
async def test_traversal_is_invalid_uri(edges, path, tmp_path):
    """Keys with `..`/`.`/empty segments, NUL, backslash or bad UTF-8, raw or
    percent-encoded, get 400 InvalidURI and nothing outside the bucket is read."""
    (tmp_path / "secret").write_text("outside")
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "secret").write_text("outside")
    edge = await edges.start(edges.config("127.0.0.1:9"))
    reply = await request(edge.port, path.encode("latin-1"))
    assert reply.status == 400, (path, reply.status, reply.body)
    assert b"<Code>InvalidURI</Code>" in reply.body
    assert b"outside" not in reply.body


@pytest_twisted.ensureDeferred
async def test_symlink_leaving_bucket_is_not_served(edges, tmp_path):
    """A link inside the bucket that points outside it is treated as absent."""
    edge = await edges.start(edges.config(None))
    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    (edge.data_dir / BUCKET / "link.txt").symlink_to(secret)
    reply = await edge.get("link.txt")
    assert reply.status == 404 and b"outside" not in reply.body


@pytest.mark.parametrize("method", ["PUT", "POST", "DELETE", "PATCH"])
@pytest_twisted.ensureDeferred
async def test_anonymous_writes_are_denied(edges, method, body):
    """Anonymous requests other than GET/HEAD get 403 AccessDenied and change nothing."""
    edge = await _edge_with_file(edges, body, "w.txt")
    reply = await edge.get("w.txt", method=method, body=b"new")
    assert reply.status == 403
    assert b"<Code>AccessDenied</Code>" in reply.body
    assert b"<RequestId>" in reply.body
    assert (edge.data_dir / BUCKET / "w.txt").read_bytes() == body


@pytest_twisted.ensureDeferred
async def test_host_matching_ignores_case_and_port(edges, body):
    """The Host is matched case-insensitively with its port stripped."""
    edge = await _edge_with_file(edges, body, "h.txt")
    host = "ExampleBucket-1250000000.FILE.myqcloud.com:8080"
    reply = await edge.get("h.txt", host=host)
    assert reply.status == 200


@pytest_twisted.ensureDeferred
async def test_unicode_keys(edges):
    """Percent-encoded UTF-8 keys map to the file of that name."""
    edge = await edges.start(edges.config(None))
    (edge.data_dir / BUCKET / "图片 1.png").write_bytes(b"png")
    reply = await edge.get("%E5%9B%BE%E7%89%87%201.png")
    assert reply.status == 200 and reply.body == b"png"
    assert reply.header("content-type") == "image/png"


@pytest_twisted.ensureDeferred
async def test_one_access_log_event_per_request(edges, body, captured_events):
    """Each request emits one `cosedge.access` event with the combined-log fields and the
    request id that the response carried."""
    edge = await _edge_with_file(edges, body, "log.txt")
    reply = await edge.get("log.txt", headers={"User-Agent": "curl/8", "Referer": "http://r/"})
    access = [e for e in captured_events if e.get("log_namespace") == "cosedge.access"]
    assert len(access) == 1
    event = access[0]
    assert event["request_id"] == reply.header("x-cos-request-id")
    assert (event["method"], event["uri"], event["code"]) == ("GET", "/log.txt", 200)
    assert event["length"] == len(body)
    assert (event["user_agent"], event["referer"], event["remote"]) == (
        "curl/8",
        "http://r/",
        "127.0.0.1",
    )


@pytest.mark.logs_errors
@pytest_twisted.ensureDeferred
async def test_bug_answers_xml_500(edges, body, monkeypatch):
    """An unexpected exception in the resource answers COS XML 500 InternalError."""
    edge = await _edge_with_file(edges, body, "boom.txt")

    def explode(*args, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(edge.store, "open_object", explode)
    reply = await edge.get("boom.txt")
    assert reply.status == 500
    assert b"<Code>InternalError</Code>" in reply.body
    assert b"simulated bug" not in reply.body


@pytest_twisted.ensureDeferred
async def test_absolute_form_target_names_the_bucket_by_its_authority(edges, body):
    """`GET http://<domain>/key HTTP/1.1` (RFC 9112 §3.2.2): the bucket comes from the
    target's authority and the Host header is ignored; the path after it is the key."""
    from twisted.internet.threads import deferToThread

    from edge.testing.process import raw_request

    edge = await _edge_with_file(edges, body)

    async def absolute(target: str, host: str) -> tuple[int, bytes]:
        status, _, data = await deferToThread(raw_request, edge.port, "GET", target, {"Host": host})
        return status, data

    assert await absolute(f"http://{DOMAIN.upper()}:80/docs/report.pdf", "x.example") == (200, body)
    path_style = f"http://127.0.0.1/{BUCKET}/docs/report.pdf?x=1"
    assert await absolute(path_style, DOMAIN) == (200, body)
    status, data = await absolute("http://unknown.example/docs/report.pdf", DOMAIN)
    assert status == 404 and b"<Code>NoSuchBucket</Code>" in data
