"""The public resource tree through HTTP in memory: bucket selection, hits, misses, refusals.

Each test sends real HTTP/1.1 through `StubTreq` to the edge's root resource over a real
folder store; what it proves is the tree's routing and answers, not the socket layer (the
integration tests cover that against a running edge).
"""

from __future__ import annotations

import os
from typing import Any

from twisted.web.http_headers import Headers

from edge.api.signature import sign
from edge.testing.deferreds import fired
from tests.web.conftest import (
    BUCKET,
    DOMAIN,
    ORIGIN_HOST,
    PATH_BUCKET,
    SECRET_ID,
    SECRET_KEY,
    Tree,
)


def answer(
    tree: Tree,
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> tuple[int, Headers, bytes]:
    """Status, headers and body of one request, all delivered in memory before returning."""
    got: list[Any] = []
    d = tree.http.request(method, url, headers=headers or {}, data=data, allow_redirects=False)
    d.addBoth(got.append)
    tree.http.flush()
    response = got.pop()
    if not hasattr(response, "code"):
        response.raiseException()
    tree.http.content(response).addBoth(got.append)
    tree.http.flush()
    return response.code, response.headers, got.pop()


def header(headers: Headers, name: str) -> str | None:
    values = headers.getRawHeaders(name)
    return values[-1] if values else None


def cos_code(body: bytes) -> str:
    return body.split(b"<Code>", 1)[1].split(b"</Code>", 1)[0].decode()


def test_a_configured_domain_picks_the_bucket_and_the_whole_path_is_the_key(tree: Tree):
    """With the bucket's domain as Host, the path (all of it) is the key: a hit is 200 with
    its bytes, its ETag and the edge's Server header."""
    tree.drop_file(BUCKET, "docs/a.txt", b"hello")
    code, headers, body = answer(tree, "GET", f"http://{DOMAIN}/docs/a.txt")
    assert (code, body) == (200, b"hello")
    assert header(headers, "etag") == '"5d41402abc4b2a76b9719d911017c592"'
    assert header(headers, "server") == "cosedge"


def test_path_style_and_api_host_style_pick_the_same_bucket(tree: Tree):
    """A Host that names no bucket leaves the first path segment to name it; the API form
    `<bucket>.<region>.myqcloud.com` names it in the Host, and the whole path is the key."""
    tree.drop_file(PATH_BUCKET, "k/v.txt", b"path-style")
    code, _, body = answer(tree, "GET", f"http://127.0.0.1/{PATH_BUCKET}/k/v.txt")
    assert (code, body) == (200, b"path-style")
    code, _, body = answer(
        tree, "GET", f"http://{PATH_BUCKET}.cos.ap-guangzhou.myqcloud.com/k/v.txt"
    )
    assert (code, body) == (200, b"path-style")
    # Under a bucket's own domain the first segment is part of the key, not a bucket name:
    # a miss there, redirected to the domain's bucket's origin with the whole path.
    code, headers, _ = answer(tree, "HEAD", f"http://{DOMAIN}/{PATH_BUCKET}/k/v.txt")
    assert code == 302
    assert header(headers, "location") == f"http://{ORIGIN_HOST}:8080/{PATH_BUCKET}/k/v.txt"


def test_an_unknown_bucket_is_404_nosuchbucket_in_cos_xml(tree: Tree):
    """Neither a bucket's root nor an object in a bucket the edge does not serve exists:
    404 NoSuchBucket, as COS's XML, with the request id in the body and the header."""
    for url in ("http://127.0.0.1/nobucket-1250000000/", "http://127.0.0.1/nobucket-1250000000/k"):
        code, headers, body = answer(tree, "GET", url)
        assert code == 404 and cos_code(body) == "NoSuchBucket", (url, body)
        assert body.startswith(b"<?xml") and header(headers, "content-type") == "application/xml"
        request_id = header(headers, "x-cos-request-id")
        assert request_id and request_id.encode() in body


def test_anonymous_write_is_403_and_its_body_is_never_spooled(tree: Tree):
    """An unsigned PUT is refused 403 AccessDenied at the end of its headers: nothing lands
    in the bucket and no spool file is ever opened in the store's temp folder."""
    code, _, body = answer(tree, "PUT", f"http://{DOMAIN}/new.bin", data=b"x" * 1000)
    assert code == 403 and cos_code(body) == "AccessDenied"
    assert not fired(tree.store.exists(BUCKET, "new.bin"))
    assert os.listdir(tree.store.tmp_dir) == []
    code, _, body = answer(tree, "GET", f"http://{DOMAIN}/new.bin", data=b"a body")
    assert code == 400 and cos_code(body) == "InvalidRequest"


def test_a_range_of_a_hit_is_206_with_its_content_range(tree: Tree):
    """`Range: bytes=2-5` of a hit is 206 with exactly those bytes and their Content-Range;
    a range past the end is 416 InvalidRange."""
    tree.drop_file(BUCKET, "r.bin", b"0123456789")
    code, headers, body = answer(tree, "GET", f"http://{DOMAIN}/r.bin", {"Range": "bytes=2-5"})
    assert (code, body) == (206, b"2345")
    assert header(headers, "content-range") == "bytes 2-5/10"
    code, headers, body = answer(tree, "GET", f"http://{DOMAIN}/r.bin", {"Range": "bytes=20-"})
    assert code == 416 and cos_code(body) == "InvalidRange"
    assert header(headers, "content-range") == "bytes */10"


def test_a_miss_with_a_rule_redirects_to_the_origin_and_starts_the_copy(tree: Tree):
    """A GET of a missing key under the bucket's Proxy rule is 302 to the origin, the key and
    query repeated as sent (a temporary credential's token left out); the copy has started.
    A HEAD redirects too, but starts nothing."""
    code, headers, body = answer(tree, "HEAD", f"http://{DOMAIN}/head%20only.bin")
    assert code == 302 and tree.copier.in_flight() == []
    code, headers, body = answer(
        tree, "GET", f"http://{DOMAIN}/dir/a%20b.bin?v=1&x-cos-security-token=secret"
    )
    assert code == 302 and body == b""
    assert header(headers, "location") == f"http://{ORIGIN_HOST}:8080/dir/a%20b.bin?v=1"
    assert [(j.bucket, j.key) for j in tree.copier.in_flight()] == [(BUCKET, "dir/a b.bin")]


def test_a_key_that_is_never_valid_is_400_invaliduri(tree: Tree):
    """Empty, `.` and `..` segments (sent plainly or percent-encoded), a backslash and bytes
    that are not UTF-8 are refused 400 InvalidURI before the store is asked."""
    for path in ("a//b", "%2E%2E/etc/passwd", "a%5Cb", "a/%2Fb", "%FF"):
        code, _, body = answer(tree, "GET", f"http://{DOMAIN}/{path}")
        assert code == 400 and cos_code(body) == "InvalidURI", (path, body)


def test_a_percent_encoded_slash_is_a_slash_in_the_key(tree: Tree):
    """The key is decoded from the raw target, not from Twisted's path segments: `a%2Fb`
    is the key `a/b`, the same object as `a/b`."""
    tree.drop_file(BUCKET, "a/b", b"slashed")
    for path in ("a/b", "a%2Fb"):
        code, _, body = answer(tree, "GET", f"http://{DOMAIN}/{path}")
        assert (code, body) == (200, b"slashed"), path


def test_a_signed_read_is_authenticated_then_served_like_an_anonymous_one(tree: Tree):
    """A signed GET of an object goes through the API's authenticator and is then answered
    by the same read path (a hit here); a wrong signature is refused before any read."""
    tree.drop_file(BUCKET, "s.txt", b"signed")
    good = sign(SECRET_ID, SECRET_KEY, "GET", "/s.txt", {}, {"host": DOMAIN})
    code, _, body = answer(tree, "GET", f"http://{DOMAIN}/s.txt", {"Authorization": good})
    assert (code, body) == (200, b"signed")
    bad = sign(SECRET_ID, "not-the-secret", "GET", "/s.txt", {}, {"host": DOMAIN})
    code, _, body = answer(tree, "GET", f"http://{DOMAIN}/s.txt", {"Authorization": bad})
    assert code == 403 and cos_code(body) == "SignatureDoesNotMatch"


def test_anonymous_bucket_and_service_roots_are_403(tree: Tree):
    """Listing is the signed API's: an anonymous GET of a served bucket's root, or of the
    service root, is 403 AccessDenied."""
    for url in (f"http://{DOMAIN}/", f"http://127.0.0.1/{PATH_BUCKET}/", "http://127.0.0.1/"):
        code, _, body = answer(tree, "GET", url)
        assert code == 403 and cos_code(body) == "AccessDenied", url
