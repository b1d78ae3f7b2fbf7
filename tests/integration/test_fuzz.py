"""Fuzzing the public port: whatever the path, Host, Range or conditional headers, the edge
never answers 500 and never serves a byte from outside the bucket folder."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.testing.process import raw_request, start_twistd, wait_ready
from tests.integration.conftest import BUCKET, DOMAIN

SECRET = b"TOP-SECRET-OUTSIDE-THE-BUCKET"
INSIDE = b"inside the bucket " * 10


@pytest.fixture(scope="module")
def fuzz_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real `twistd cosedge` process with one bucket, a file outside the bucket folder,
    and a symlink inside it pointing out; yields the port."""
    root: Path = tmp_path_factory.mktemp("fuzz")
    (root / "secret").write_bytes(SECRET)
    bucket = root / "data" / BUCKET
    (bucket / "a").mkdir(parents=True)
    (root / "data" / "secret").write_bytes(SECRET)
    (bucket / "a" / "file.txt").write_bytes(INSIDE)
    (bucket / "file.txt").write_bytes(INSIDE)
    (bucket / "escape").symlink_to(root)
    config = root / "fuzz.yaml"
    # The origin is loopback port 9 (nothing listens): misses redirect, copies fail
    # at once, and nothing leaves the machine.
    config.write_text(
        "listen: 'tcp:0:interface=127.0.0.1'\n"
        f"data_dir: {root / 'data'}\n"
        "extra_origin_cidrs: ['127.0.0.1/32']\n"
        "credentials: [{secret_id: AKIDfuzz, secret_key: fuzz-secret}]\n"
        f"buckets:\n  {BUCKET}:\n    domains: [{DOMAIN}]\n"
        "    origin: {address: '127.0.0.1:9'}\n"
    )
    proc = start_twistd("--config", str(config), cwd=root)
    try:
        port, _ = wait_ready(proc)
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


segments = st.sampled_from(
    [
        "a",
        "file.txt",
        "..",
        ".",
        "",
        "%2e%2e",
        "%2E.",
        "%2f",
        "%5c",
        "%00",
        "secret",
        "escape",
        "%ff",
        "a%2f..",
        "..%2f..",
        "\\",
        "~",
        "%25",
        "?",
        "#",
        ";x",
        "%20",
    ]
)
paths = st.lists(segments, min_size=0, max_size=6).map(lambda parts: "/" + "/".join(parts))
path_style = paths.map(lambda p: f"/{BUCKET}{p}")
hosts = st.one_of(
    st.just(DOMAIN),
    st.just(DOMAIN.upper() + ":80"),
    st.just("127.0.0.1"),
    st.just("[::1]:8080"),
    st.just(""),
    st.text(alphabet="abcxyz.-:[]0123456789", max_size=30),
)
ranges = st.one_of(
    st.none(),
    st.builds(lambda a, b: f"bytes={a}-{b}", st.integers(-5, 400), st.integers(-5, 400)),
    st.builds(lambda b: f"bytes=-{b}", st.integers(0, 400)),
    st.sampled_from(["bytes=0-0,1-1", "bytes=", "items=1-2", "bytes=--1", "bytes=1-a"]),
)
conditionals = st.dictionaries(
    st.sampled_from(
        ["If-None-Match", "If-Match", "If-Modified-Since", "If-Unmodified-Since", "If-Range"]
    ),
    st.sampled_from(
        [
            '"x"',
            "*",
            'W/"y"',
            "Thu, 01 Jan 1970 00:00:00 GMT",
            "garbage",
            "Sat, 01 Jan 2050 00:00:00 GMT",
            "",
        ]
    ),
    max_size=3,
)

# Signed-looking requests go to the management API: malformed, forged and expired signatures,
# in the header or the query, must be refused with COS XML, never a 500.
authorizations = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "q-sign-algorithm=sha1&q-ak=AKIDfuzz&q-sign-time=1;9999999999&q-key-time=1;"
            "9999999999&q-header-list=host&q-url-param-list=&q-signature=00",
            "q-sign-algorithm=sha1&q-ak=AKIDfuzz",
            "q-sign-algorithm=md5",
            "Bearer x",
            "q-sign-time=abc;def&q-key-time=;&q-ak=&q-signature=&q-sign-algorithm=sha1",
            "=&=&&",
        ]
    ),
)
queries = st.sampled_from(
    [
        "",
        "?origin",
        "?uploads",
        "?uploadId=zz&partNumber=1",
        "?q-sign-algorithm=sha1&q-ak=x&q-sign-time=1;2&q-key-time=1;2&q-signature=ab",
        "?prefix=a&max-keys=-1&encoding-type=url",
        "?acl",
    ]
)


@settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.one_of(paths, path_style),
    host=hosts,
    byte_range=ranges,
    extra=conditionals,
    method=st.sampled_from(["GET", "HEAD", "GET", "PUT", "DELETE", "OPTIONS", "POST"]),
    authorization=authorizations,
    query=queries,
)
def test_never_500_never_outside(
    fuzz_edge, path, host, byte_range, extra, method, authorization, query
):
    """No generated request gets a 5xx or a byte of the file outside the bucket."""
    path += query
    headers = dict(extra)
    if authorization is not None:
        headers["Authorization"] = authorization
    if byte_range is not None:
        headers["Range"] = byte_range
    if host:
        headers["Host"] = host
    status, reply_headers, body = raw_request(fuzz_edge, method, path, headers)
    assert status < 500, (path, host, headers, status, body)
    assert SECRET not in body
    assert reply_headers.get("x-cos-request-id")
    if status >= 400 and method != "HEAD":
        assert body.startswith(b"<?xml"), body
