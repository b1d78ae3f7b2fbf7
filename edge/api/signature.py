"""COS request signatures (the HMAC-SHA1 `q-sign-algorithm=sha1` scheme), both ways.

The management API verifies them; `cosedge-admin` and the tests make them. One module does
both so the canonical form is written once:

    FormatString = method\\npath\\nparams\\nheaders\\n
    StringToSign = sha1\\n<q-sign-time>\\nsha1hex(FormatString)\\n
    SignKey      = hmac_sha1_hex(SecretKey, <q-key-time>)
    Signature    = hmac_sha1_hex(SignKey, StringToSign)

`path` is the decoded path the request was sent to. COS's own form names the bucket in the
Host (`<bucket>.cos.<region>.myqcloud.com`, or a domain configured for it), so `path` is the
object key with a leading `/` (`/` for bucket requests). COS's path leaves the bucket out,
so a signature binds to its bucket only through a signed Host; the caller says which headers
must be signed (`required_headers`): `host` whenever the Host names the bucket. A path-style
request (`/<bucket>/<key>` on an IP or any other name) signs that whole path instead, as
S3-compatible path style does, so the bucket is in the signed path.

params and headers are those named in `q-url-param-list` / `q-header-list`, names lowercased,
names and values percent-encoded with only `-_.~` left as they are, sorted, joined `k=v&k=v`.

Times: a signature is refused before `q-sign-time` or `q-key-time` starts (beyond
`ALLOWED_SKEW`), after either ends, and when either spans more than `MAX_SIGN_WINDOW`
(7 days, the longest S3 allows a pre-signed URL): a leaked signature cannot stay valid for
years. The SDKs sign for minutes to an hour; pre-signed URLs may ask for up to the bound.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edge.config import Credential
from edge.problems import CosProblem

ALGORITHM = "sha1"
# Clock skew tolerated at the start of a signature's validity (COS allows some too).
ALLOWED_SKEW = 900
# The longest validity a signature may claim, in seconds (S3's bound on pre-signed URLs).
MAX_SIGN_WINDOW = 7 * 24 * 3600
_FIELDS = ("q-sign-algorithm", "q-ak", "q-sign-time", "q-key-time", "q-signature")


class SignatureProblem(CosProblem):
    """Why a signed request is refused; `code` is the COS error code to answer with."""


@dataclass(frozen=True)
class SignatureParts:
    access_key: str
    sign_time: str
    key_time: str
    header_list: tuple[str, ...]
    param_list: tuple[str, ...]
    signature: str
    from_query: bool


def _encode(text: str) -> str:
    return urllib.parse.quote(text.encode("utf-8"), safe="-_.~")


def _canonical(pairs: Mapping[str, str]) -> tuple[str, str]:
    """(`k=v&...` over the encoded, lowercased names, the `;`-joined name list)."""
    encoded = {_encode(k).lower(): _encode(v) for k, v in pairs.items()}
    names = sorted(encoded)
    return "&".join(f"{n}={encoded[n]}" for n in names), ";".join(names)


def string_to_sign(
    method: str, path: str, params: Mapping[str, str], headers: Mapping[str, str], sign_time: str
) -> str:
    params_text, _ = _canonical(params)
    headers_text, _ = _canonical(headers)
    format_string = f"{method.lower()}\n{path}\n{params_text}\n{headers_text}\n"
    digest = hashlib.sha1(format_string.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{sign_time}\n{digest}\n"


def signature(secret_key: str, key_time: str, to_sign: str) -> str:
    sign_key = hmac.new(secret_key.encode(), key_time.encode(), hashlib.sha1).hexdigest()
    return hmac.new(sign_key.encode(), to_sign.encode("utf-8"), hashlib.sha1).hexdigest()


def sign(
    secret_id: str,
    secret_key: str,
    method: str,
    path: str,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    *,
    now: float | None = None,
    expires: int = 600,
) -> str:
    """The `Authorization` value (also usable as a pre-signed query string)."""
    params = dict(params or {})
    headers = dict(headers or {})
    start = int(time.time() if now is None else now)
    sign_time = f"{start - 60};{start + expires}"
    to_sign = string_to_sign(method, path, params, headers, sign_time)
    _, param_names = _canonical(params)
    _, header_names = _canonical(headers)
    return (
        f"q-sign-algorithm={ALGORITHM}&q-ak={secret_id}&q-sign-time={sign_time}"
        f"&q-key-time={sign_time}&q-header-list={header_names}&q-url-param-list={param_names}"
        f"&q-signature={signature(secret_key, sign_time, to_sign)}"
    )


def is_signed(authorization: bytes | None, query: bytes | None) -> bool:
    """Whether a request claims to be signed (and so is the management API's).

    On every request's path, so it looks at raw bytes: an Authorization header, or a
    `q-sign-algorithm` parameter (a pre-signed URL).
    """
    if authorization and authorization.strip():
        return True
    if not query or query.lower().find(b"q-sign-algorithm") < 0:  # find: faster than `in`
        return False
    return any(part.partition(b"=")[0].lower() == b"q-sign-algorithm" for part in query.split(b"&"))


def parse_parts(authorization: str | None, query: Mapping[str, str]) -> SignatureParts:
    """Pull the signature fields from the Authorization header or the query string."""
    from_query = not (authorization and authorization.strip())
    if from_query:
        fields = {k.lower(): v for k, v in query.items() if k.lower().startswith("q-")}
    else:
        assert authorization is not None
        fields = {}
        for item in authorization.strip().split("&"):
            name, sep, value = item.partition("=")
            if not sep:
                raise SignatureProblem("AccessDenied", "Authorization is not a COS signature")
            fields[name.strip().lower()] = urllib.parse.unquote(value.strip())
    missing = [f for f in _FIELDS if not fields.get(f)]
    if missing:
        raise SignatureProblem("AccessDenied", f"signature lacks {', '.join(missing)}")
    if fields["q-sign-algorithm"].lower() != ALGORITHM:
        raise SignatureProblem("AccessDenied", "only q-sign-algorithm=sha1 is supported")

    def names(value: str | None) -> tuple[str, ...]:
        return tuple(n for n in (value or "").lower().split(";") if n)

    return SignatureParts(
        access_key=fields["q-ak"],
        sign_time=fields["q-sign-time"],
        key_time=fields["q-key-time"],
        header_list=names(fields.get("q-header-list")),
        param_list=names(fields.get("q-url-param-list")),
        signature=fields["q-signature"].lower(),
        from_query=from_query,
    )


def _window(text: str) -> tuple[int, int]:
    start, sep, end = text.partition(";")
    try:
        if not sep:
            raise ValueError
        return int(start), int(end)
    except ValueError:
        raise SignatureProblem("AccessDenied", f"bad signature time {text!r}") from None


def verify(
    parts: SignatureParts,
    credentials: Sequence[Credential],
    *,
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    now: float,
    required_headers: Sequence[str] = (),
) -> Credential:
    """Check a signature against the configured keys; returns the key that signed it.

    `query` and `headers` hold the request's decoded values by lowercased name. A name the
    signature lists but the request lacks is signed as empty, as the SDKs do.
    `required_headers` must all be in `q-header-list`: `host` when the Host names the
    bucket, so a signature made for one bucket cannot be replayed against another.
    """
    start, end = _window(parts.sign_time)
    key_start, key_end = _window(parts.key_time)
    if start > end or key_start > key_end:
        raise SignatureProblem("AccessDenied", "signature time window is reversed")
    if end - start > MAX_SIGN_WINDOW or key_end - key_start > MAX_SIGN_WINDOW:
        raise SignatureProblem(
            "AccessDenied", f"signature time window is longer than {MAX_SIGN_WINDOW} seconds"
        )
    if now + ALLOWED_SKEW < start or now + ALLOWED_SKEW < key_start:
        raise SignatureProblem(
            "RequestTimeTooSkewed",
            "The difference between the request time and the server's time is too large.",
        )
    if now > end or now > key_end:
        raise SignatureProblem("AccessDenied", "Request has expired")
    missing = [name for name in required_headers if name not in parts.header_list]
    if missing:
        raise SignatureProblem(
            "AccessDenied",
            f"the signature must cover the {', '.join(missing)} header (it names the bucket)",
        )
    # The query chooses the operation (`?origin`, `?uploadId=`, `?prefix=`): a parameter
    # the signature does not cover would let a captured signature for `DELETE /` delete
    # `/?origin`. The COS SDKs sign every parameter they send.
    unsigned = sorted(n for n in query if not n.startswith("q-") and n not in parts.param_list)
    if unsigned:
        raise SignatureProblem(
            "AccessDenied", f"the query parameter {unsigned[0]!r} is not covered by the signature"
        )
    credential = next((c for c in credentials if c.secret_id == parts.access_key), None)
    if credential is None:
        raise SignatureProblem(
            "InvalidAccessKeyId", "The access key Id format you provided is invalid."
        )
    params = {name: query.get(name, "") for name in parts.param_list}
    signed_headers = {name: headers.get(name, "") for name in parts.header_list}
    candidates = [signed_headers]
    host = signed_headers.get("host", "")
    if ":" in host and not host.endswith("]"):
        # SDKs sign the URL's host name; on a non-default port the Host header adds `:port`.
        candidates.append({**signed_headers, "host": host.rsplit(":", 1)[0]})
    for candidate in candidates:
        to_sign = string_to_sign(method, path, params, candidate, parts.sign_time)
        expected = signature(credential.secret_key, parts.key_time, to_sign)
        # Bytes, not str: compare_digest refuses a str with non-ASCII in it (a TypeError).
        if hmac.compare_digest(expected.encode(), parts.signature.encode("utf-8", "replace")):
            return credential
    raise SignatureProblem("SignatureDoesNotMatch", "The Signature you specified is invalid.")
