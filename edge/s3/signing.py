"""SigV4 signing of S3 requests with botocore, and the URL encoding the signature depends on.

botocore is used only here and only for its signer: signing is a few HMACs over strings, pure
CPU, so it runs on the reactor thread; botocore never opens a connection. Requests are signed
with `S3SigV4Auth` (the S3 flavour of `SigV4Auth`) because S3 signs the path exactly as sent,
encoded once, where the generic signer would encode it again and collapse `//` and `..`, and
strict stores would reject keys such as `a b`, `a%2Fb` or `x/../y`.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    """`S3SigV4Auth` that takes the payload hash from the request instead of hashing a body.

    Bodies are streamed by Twisted, never handed to botocore, so their hash is computed
    beforehand (in a thread for files) and passed in.
    """

    def payload(self, request: Any) -> str:
        return str(request.context["payload_sha256"])


class Signer:
    """Signs requests for one set of credentials and one region."""

    def __init__(self, access_key_id: str, secret_access_key: str, region: str) -> None:
        self._auth = _PresetPayloadSigner(
            Credentials(access_key_id, secret_access_key), "s3", region
        )

    def sign(
        self, method: str, url: str, headers: Mapping[str, str], payload_sha256: str
    ) -> dict[str, str]:
        """Return `headers` plus the signature headers (Authorization, X-Amz-Date, ...).

        `url` must already be encoded (`encode_key`, `encode_query`); the Host header is left
        to Twisted, which writes it from the URL exactly as botocore derives it (port omitted
        when it is the scheme's default).
        """
        request = AWSRequest(method=method, url=url, headers=dict(headers))
        request.context["payload_sha256"] = payload_sha256
        self._auth.add_auth(request)
        return {str(name): str(value) for name, value in request.headers.items()}
