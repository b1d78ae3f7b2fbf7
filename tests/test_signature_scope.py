"""Signature scope and bounds: a required `host`, a bounded validity window, the start of
`q-key-time` checked for skew, a byte-wise comparison, and signatures redacted from logs."""

from __future__ import annotations

import time
import urllib.parse

import pytest

from edge.api.errors import redact_uri
from edge.api.signature import (
    ALLOWED_SKEW,
    MAX_SIGN_WINDOW,
    SignatureParts,
    SignatureProblem,
    parse_parts,
    sign,
    verify,
)
from edge.config import Credential

SECRET_ID = "AKIDscope"
SECRET_KEY = "scope-secret"
CREDS = (Credential(SECRET_ID, SECRET_KEY),)
HOST = "b-1250000000.cos.ap-guangzhou.myqcloud.com"


def parts_of(auth: str) -> SignatureParts:
    return parse_parts(auth, {})


def check(auth: str, *, headers: dict[str, str], now: float | None = None, **kw: object) -> object:
    return verify(
        parts_of(auth),
        CREDS,
        method="GET",
        path="/",
        query={},
        headers=headers,
        now=time.time() if now is None else now,
        **kw,  # type: ignore[arg-type]
    )


def test_required_host_must_be_in_the_header_list():
    """A signature without `host` in q-header-list is refused when the caller requires it
    (the Host names the bucket); with `host` signed it verifies."""
    without = sign(SECRET_ID, SECRET_KEY, "GET", "/", {}, {})
    with pytest.raises(SignatureProblem) as info:
        check(without, headers={"host": HOST}, required_headers=("host",))
    assert info.value.code == "AccessDenied" and "host" in info.value.message
    signed = sign(SECRET_ID, SECRET_KEY, "GET", "/", {}, {"host": HOST})
    assert check(signed, headers={"host": HOST}, required_headers=("host",))
    with pytest.raises(SignatureProblem) as info:
        other = "c-1250000000.cos.ap-guangzhou.myqcloud.com"
        check(signed, headers={"host": other}, required_headers=("host",))
    assert info.value.code == "SignatureDoesNotMatch"


def test_validity_window_is_bounded():
    """A signature claiming more than MAX_SIGN_WINDOW (7 days) is refused, even when
    correctly signed; exactly the bound is accepted."""
    assert MAX_SIGN_WINDOW == 7 * 24 * 3600
    now = time.time()
    ok = sign(SECRET_ID, SECRET_KEY, "GET", "/", {}, {}, now=now, expires=MAX_SIGN_WINDOW - 60)
    assert check(ok, headers={}, now=now)
    long = sign(SECRET_ID, SECRET_KEY, "GET", "/", {}, {}, now=now, expires=10 * 365 * 86400)
    with pytest.raises(SignatureProblem) as info:
        check(long, headers={}, now=now)
    assert info.value.code == "AccessDenied" and "longer" in info.value.message


def test_key_time_start_is_checked_for_skew():
    """A q-key-time that starts in the future (beyond ALLOWED_SKEW) is refused like a
    q-sign-time would be, even if q-sign-time is current."""
    now = int(time.time())
    sign_time = f"{now - 60};{now + 600}"
    key_time = f"{now + ALLOWED_SKEW + 600};{now + ALLOWED_SKEW + 1200}"
    parts = SignatureParts(SECRET_ID, sign_time, key_time, (), (), "0" * 40, False)
    with pytest.raises(SignatureProblem) as info:
        verify(parts, CREDS, method="GET", path="/", query={}, headers={}, now=now)
    assert info.value.code == "RequestTimeTooSkewed"


def test_non_ascii_signature_is_a_mismatch_not_a_type_error():
    """`hmac.compare_digest` raises TypeError for a str with non-ASCII; bytes are compared,
    so the answer is SignatureDoesNotMatch."""
    auth = sign(SECRET_ID, SECRET_KEY, "GET", "/", {}, {})
    forged = auth.rpartition("q-signature=")[0] + "q-signature=" + "é" * 40
    with pytest.raises(SignatureProblem) as info:
        check(forged, headers={})
    assert info.value.code == "SignatureDoesNotMatch"


@pytest.mark.parametrize(
    "uri, expected",
    [
        (b"/a.txt", b"/a.txt"),
        (b"/a.txt?v=1", b"/a.txt?v=1"),
        (
            b"/k?q-sign-algorithm=sha1&q-ak=AKIDx&q-signature=abc&v=2",
            b"/k?q-sign-algorithm=REDACTED&q-ak=REDACTED&q-signature=REDACTED&v=2",
        ),
        (b"/k?Q-Signature=abc", b"/k?Q-Signature=REDACTED"),
        (b"/k?q%2Dsignature=abc", b"/k?q%2Dsignature=REDACTED"),
        (b"/k?x-cos-security-token=tok&prefix=q-", b"/k?x-cos-security-token=REDACTED&prefix=q-"),
        (b"/k?q-signature", b"/k?q-signature=REDACTED"),
    ],
)
def test_redact_uri(uri, expected):
    """The access log's URI keeps the path and ordinary parameters but no signature
    value, however the parameter name is spelled."""
    assert redact_uri(uri) == expected


def test_redacted_presigned_url_no_longer_verifies():
    """What the log keeps cannot be replayed: the redacted query has no signature left."""
    auth = sign(SECRET_ID, SECRET_KEY, "GET", "/a", {}, {})
    logged = redact_uri(b"/a?" + auth.encode())
    query = dict(urllib.parse.parse_qsl(logged.partition(b"?")[2].decode()))
    assert auth.rpartition("q-signature=")[2] not in logged.decode()
    with pytest.raises(SignatureProblem):
        verify(
            parse_parts(None, query), CREDS, method="GET", path="/a", query=query,
            headers={}, now=time.time(),
        )  # fmt: skip
