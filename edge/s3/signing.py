"""SigV4 signing of S3 requests with botocore, and the URL encoding the signature depends on.

botocore is used only here and only for its signer: signing is a few HMACs over strings, pure
CPU, so it runs on the reactor thread; botocore never opens a connection. Requests are signed
with `S3SigV4Auth` (the S3 flavour of `SigV4Auth`) because S3 signs the path exactly as sent,
encoded once, where the generic signer would encode it again and collapse `//` and `..`, and
strict stores would reject keys such as `a b`, `a%2Fb` or `x/../y`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

#: SHA-256 of the empty body, the payload hash of every request without one.
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#: The payload hash for a body whose bytes are not hashed (plain streaming from a producer).
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"


def encode_key(key: str) -> str:
    """Percent-encode an object key for the path, as SigV4 for S3 wants it (once, `/` kept).

    Everything but unreserved characters (`A-Z a-z 0-9 - _ . ~`) is escaped from the UTF-8
    bytes, so a space is `%20` (never `+`), `+` is `%2B` and `%` is `%25`.
    """
    return quote(key.encode("utf-8"), safe="/~")


def encode_query(params: Mapping[str, str | None]) -> str:
    """The query string, sorted and encoded so it is already SigV4's canonical query string.

    A None value gives a bare name (`?uploads`), which S3 signs as `uploads=`.
    """
    parts = []
    for name in sorted(params):
        value = params[name]
        encoded = quote(name, safe="~")
        parts.append(encoded if value is None else f"{encoded}={quote(value, safe='~')}")
    return "&".join(parts)


class _PresetPayloadSigner(S3SigV4Auth):  # type: ignore[misc]  # botocore ships no types
    """`S3SigV4Auth` that takes the payload hash from the request instead of hashing a body,
    and remembers the keys it derives.

    Bodies are streamed by Twisted, never handed to botocore, so their hash is computed
    beforehand (in a thread for files) and passed in. botocore derives the signing key from
    the secret anew for every request (four HMACs over the date, region, service); the
    derivation is a pure function of its inputs, so its steps are kept (a new day's date is a
    new input, derived afresh) and only the final HMAC over the request is computed each time.
    """

    _DERIVED_LIMIT = 64  # a few days' worth of keys: the cache never grows with traffic

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._derived: dict[tuple[bytes, str], bytes] = {}

    def payload(self, request: Any) -> str:
        return str(request.context["payload_sha256"])

    def _sign(self, key: bytes, msg: str, hex: bool = False) -> Any:
        if hex:  # the signature itself: over the request, never the same twice
            return super()._sign(key, msg, hex=True)
        derived = self._derived.get((key, msg))
        if derived is None:
            if len(self._derived) >= self._DERIVED_LIMIT:
                self._derived.clear()
            derived = self._derived[(key, msg)] = super()._sign(key, msg)
        return derived


class Signer:
    """Signs requests for one set of credentials and one region.

    A request signed again within the same second of the clock gets the headers botocore
    signed it with the first time: the signature is a function of the request and the
    second (`X-Amz-Date`), so the result is the same, and a hot object's hits (many a
    second) skip the canonical request and its HMAC. Only signatures dated the current
    second of `clock` are kept, at most `REUSE_LIMIT` of them.
    """

    REUSE_LIMIT = 1024

    def __init__(
        self,
        access_key_id: str,
        secret_access_key: str,
        region: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._auth = _PresetPayloadSigner(
            Credentials(access_key_id, secret_access_key), "s3", region
        )
        self._clock = clock
        self._second = -1
        self._stamp = ""  # the second as X-Amz-Date spells it
        self._signed: dict[tuple[str, str, tuple[tuple[str, str], ...], str], dict[str, str]] = {}

    def sign(
        self, method: str, url: str, headers: Mapping[str, str], payload_sha256: str
    ) -> dict[str, str]:
        """Return `headers` plus the signature headers (Authorization, X-Amz-Date, ...).

        `url` must already be encoded (`encode_key`, `encode_query`); the Host header is left
        to Twisted, which writes it from the URL exactly as botocore derives it (port omitted
        when it is the scheme's default).
        """
        second = int(self._clock())
        if second != self._second:
            self._signed.clear()
            self._second = second
            self._stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
        key = (method, url, tuple(headers.items()), payload_sha256)
        signed = self._signed.get(key)
        if signed is None:
            request = AWSRequest(method=method, url=url, headers=dict(headers))
            request.context["payload_sha256"] = payload_sha256
            self._auth.add_auth(request)
            signed = {str(name): str(value) for name, value in request.headers.items()}
            # Kept only when botocore's clock agreed on the second (it reads its own).
            if signed.get("X-Amz-Date") == self._stamp and len(self._signed) < self.REUSE_LIMIT:
                self._signed[key] = signed
        return dict(signed)
