"""COS request signatures: vectors made by the official SDK's own signer (`CosS3Auth`) verify;
tampering, wrong keys and bad times are refused with COS's error codes."""

from __future__ import annotations

import time
import urllib.parse

import pytest
import requests
from qcloud_cos import CosConfig
from qcloud_cos.cos_auth import CosS3Auth

from edge.api.signature import SignatureProblem, parse_parts, sign, verify
from edge.config import Credential

SECRET_ID = "AKIDcosedgeTEST"
SECRET_KEY = "s3cr3t-key-for-tests"
CREDS = (Credential(SECRET_ID, SECRET_KEY, ("*",)),)


def sdk_signed(method, key, params=None, headers=None, expire=600):
    """A request signed by the SDK exactly as its client does it."""
    conf = CosConfig(Region="ap-guangzhou", SecretId=SECRET_ID, SecretKey=SECRET_KEY)
    request = requests.Request(
        method,
        f"http://127.0.0.1:8080/{urllib.parse.quote(key or '')}",
        headers=headers or {},
        params=params or {},
    ).prepare()
    CosS3Auth(conf, key, params or {}, expire)(request)
    return request


def check(request, key, *, now=None, headers=None, credentials=CREDS):
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(request.url).query, True))
    sent = {k.lower(): v for k, v in request.headers.items()}
    sent.setdefault("host", urllib.parse.urlsplit(request.url).netloc)  # as requests sends it
    sent.update(headers or {})
    parts = parse_parts(sent.get("authorization"), {k.lower(): v for k, v in query.items()})
    return verify(
        parts,
        credentials,
        method=request.method,
        path="/" + (key or ""),
        query={k.lower(): v for k, v in query.items()},
        headers=sent,
        now=time.time() if now is None else now,
    )


@pytest.mark.parametrize(
    "method, key, params, headers",
    [
        ("GET", "photo.jpg", {}, {}),
        (
            "PUT",
            "目录/文件 name+plus.txt",
            {},
            {
                "Content-Type": "text/plain",
                "x-cos-meta-owner": "ops team",
                "Content-MD5": "1B2M2Y8AsgTpgAmY7PhCfg==",
            },
        ),
        ("GET", None, {"prefix": "a b/", "max-keys": "10", "encoding-type": "url"}, {}),
        ("PUT", None, {"origin": ""}, {"Content-Type": "application/xml"}),
        ("DELETE", "x/y/z", {}, {"Host": "b-1250000000.cos.ap-guangzhou.myqcloud.com"}),
    ],
)
def test_sdk_signatures_verify(method, key, params, headers):
    """Requests signed by the official SDK's `CosS3Auth` (object and bucket requests, a
    non-ASCII key with a space and `+`, signed headers, query parameters, a bucket Host)
    verify and yield the credential of the signing SecretId."""
    request = sdk_signed(method, key, params, headers)
    assert check(request, key).secret_id == SECRET_ID


def test_tampered_request_is_refused():
    """A signed request whose x-cos-meta-owner header is changed after signing, or that is
    checked against another key's path, is refused with SignatureDoesNotMatch."""
    request = sdk_signed("PUT", "a.txt", {}, {"x-cos-meta-owner": "alice"})
    with pytest.raises(SignatureProblem) as info:
        check(request, "a.txt", headers={"x-cos-meta-owner": "mallory"})
    assert info.value.code == "SignatureDoesNotMatch"
    with pytest.raises(SignatureProblem) as info:
        check(request, "b.txt")
    assert info.value.code == "SignatureDoesNotMatch"


def test_wrong_secret_unknown_id_and_times():
    """Checked against a different secret key a signature is SignatureDoesNotMatch, and with an
    unknown SecretId InvalidAccessKeyId; an hour later, past its 600 s window, it is
    AccessDenied (expired), and two hours early, beyond the allowed skew, RequestTimeTooSkewed."""
    request = sdk_signed("GET", "a.txt")
    with pytest.raises(SignatureProblem) as info:
        check(request, "a.txt", credentials=(Credential(SECRET_ID, "other"),))
    assert info.value.code == "SignatureDoesNotMatch"
    with pytest.raises(SignatureProblem) as info:
        check(request, "a.txt", credentials=(Credential("AKIDother", SECRET_KEY),))
    assert info.value.code == "InvalidAccessKeyId"
    with pytest.raises(SignatureProblem) as info:
        check(request, "a.txt", now=time.time() + 3600)  # signed for 600 s
    assert info.value.code == "AccessDenied" and "expired" in info.value.message
    with pytest.raises(SignatureProblem) as info:
        check(request, "a.txt", now=time.time() - 7200)  # not valid yet, beyond the skew
    assert info.value.code == "RequestTimeTooSkewed"


def test_our_signer_matches_the_sdk():
    """`sign()` (used by cosedge-admin) produces what the SDK produces for the same input."""
    now = time.time()
    ours = sign(
        SECRET_ID,
        SECRET_KEY,
        "PUT",
        "/",
        {"origin": ""},
        {"content-type": "application/xml", "host": "b-1.cos.x.myqcloud.com"},
        now=now,
    )
    request = requests.Request("PUT", "http://127.0.0.1/?origin=").prepare()
    request.headers["Authorization"] = ours
    request.headers["Content-Type"] = "application/xml"
    request.headers["Host"] = "b-1.cos.x.myqcloud.com"
    assert check(request, None).secret_id == SECRET_ID


def test_host_with_port_matches_signed_host_name():
    """SDKs sign the URL's host name; a Host header with :port still verifies."""
    request = sdk_signed("GET", "a.txt")
    assert check(request, "a.txt", headers={"host": "127.0.0.1:8080"})


def test_presigned_query_form():
    """A signature from `sign()` carried in the query string, with no Authorization header, is
    read as the query form and verifies for GET /a.txt."""
    auth = sign(SECRET_ID, SECRET_KEY, "GET", "/a.txt", {}, {})
    query = dict(urllib.parse.parse_qsl(auth))
    parts = parse_parts(None, query)
    assert parts.from_query
    assert verify(
        parts, CREDS, method="GET", path="/a.txt", query=query, headers={}, now=time.time()
    )


@pytest.mark.parametrize(
    "header",
    [
        "Bearer abc",
        "q-sign-algorithm=md5&q-ak=a&q-sign-time=1;2&q-key-time=1;2&q-signature=x",
        "q-sign-algorithm=sha1&q-ak=a",
    ],
)
def test_malformed_authorization(header):
    """An Authorization header that is not a COS signature (`Bearer`), names an algorithm other
    than sha1 or lacks required fields is refused while parsing with AccessDenied."""
    with pytest.raises(SignatureProblem) as info:
        parse_parts(header, {})
    assert info.value.code == "AccessDenied"
