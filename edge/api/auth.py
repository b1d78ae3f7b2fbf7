"""Who may ask: the one authenticator of the management API, and how a request is read.

Every signed request is judged here, once, against the configured key pairs (`Authenticator`),
and a refusal anywhere in the API is a `Denied` carrying the COS error to answer. The decoded
query and headers are cached on the request by `request_query` / `request_headers`, because
the signature check, the web layer's routing and the operation all read them.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Collection, Sequence

from twisted.web.server import Request

from edge.api import errors, signature
from edge.api.buckets import BucketRegistry, split_host
from edge.api.errors import CosError
from edge.config import Credential


class Denied(Exception):
    """A request the API refuses: the COS error to answer, with a specific message."""

    def __init__(self, error: CosError, message: str | None = None) -> None:
        super().__init__(message or error.message)
        self.error = error
        self.message = message


def request_query(request: Request) -> dict[str, str]:
    """Decoded query parameters by lowercased name (last one wins, blank values kept);
    parsed once per request, since the signature check and the operation both need them."""
    cached: dict[str, str] | None = getattr(request, "_cos_query", None)
    if cached is None:
        query = request.uri.partition(b"?")[2].decode("utf-8", "replace")
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, errors="replace")
        cached = {k.lower(): v for k, v in pairs}
        request._cos_query = cached  # type: ignore[attr-defined]
    return cached


_PERCENT, _PLUS = b"%+"  # byte values: `in` with an int is ten times `in` with b"%"


def query_names(request: Request) -> Collection[str]:
    """The query's parameter names, lowercased, as `request_query` has them; told from the
    raw bytes without decoding when no escape can change a name (every anonymous read
    asks, and a pre-signed URL or a cache-buster `?v=1` is never a sub-resource)."""
    names: Collection[str] | None = getattr(request, "_cos_names", None)
    if names is not None:
        return names
    cached: dict[str, str] | None = getattr(request, "_cos_query", None)
    query = request.uri.partition(b"?")[2]
    if cached is not None or _PERCENT in query or _PLUS in query or not query.isascii():
        names = request_query(request).keys()
    else:
        names = {p.partition(b"=")[0].lower().decode("ascii") for p in query.split(b"&") if p}
    request._cos_names = names  # type: ignore[attr-defined]
    return names


def request_headers(request: Request) -> dict[str, str]:
    """Header values by lowercased name (UTF-8, else Latin-1); decoded once per request."""
    cached: dict[str, str] | None = getattr(request, "_cos_headers", None)
    if cached is None:
        cached = {}
        for name, values in request.requestHeaders.getAllRawHeaders():
            raw = values[-1]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            cached[name.decode("latin-1").lower()] = text
        request._cos_headers = cached  # type: ignore[attr-defined]
    return cached


def request_path(request: Request) -> str:
    """The decoded path the request was sent to (what a path-style signature signs)."""
    uri = request.uri
    if uri.startswith((b"http://", b"https://")):
        uri = b"/" + uri.split(b"/", 3)[3] if uri.count(b"/") >= 3 else b"/"
    raw = uri.partition(b"?")[0]
    return urllib.parse.unquote_to_bytes(raw).decode("utf-8", "replace")


class Authenticator:
    """Checks a request's COS signature against the key pairs in force and the bucket it
    addresses; the key pairs change on a config reload (`set_credentials`)."""

    def __init__(
        self,
        credentials: Sequence[Credential],
        registry: BucketRegistry,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._credentials = tuple(credentials)
        self._registry = registry
        self._now = wall_clock

    def set_credentials(self, credentials: Sequence[Credential]) -> None:
        """The key pairs after a config reload; the next request is judged by them."""
        self._credentials = tuple(credentials)

    def authenticate(self, request: Request, bucket: str | None, key: str | None) -> Credential:
        """Verify the signature; raises `Denied` with COS's error for the failure.

        The signature must name the bucket the request addresses: when the Host selects it
        (`<bucket>.cos.<region>.myqcloud.com` or a configured domain), `host` must be signed
        and the path signed is the key, as COS signs; otherwise (path style, `/<bucket>/...`)
        the path signed is the whole path as requested, bucket included. Without this a
        signature captured for one bucket could be replayed against another.
        """
        verified: tuple[str | None, str | None, Credential] | None = getattr(
            request, "_cos_verified", None
        )
        if verified is not None and verified[:2] == (bucket, key):
            # Verified when its headers arrived, before the body was let in: a signature
            # that expires while a large body uploads must not refuse it at the end.
            return verified[2]
        query = request_query(request)
        headers = request_headers(request)
        required: tuple[str, ...] = ()
        if bucket is not None and self._host_bucket(request) == bucket:
            path, required = "/" + (key or ""), ("host",)
        else:
            path = request_path(request)
        try:
            parts = signature.parse_parts(headers.get("authorization"), query)
            credential = signature.verify(
                parts,
                self._credentials,
                method=request.method.decode("ascii"),
                path=path,
                query=query,
                headers=headers,
                now=self._now(),
                required_headers=required,
            )
        except signature.SignatureProblem as e:
            raise Denied(errors.by_code(e.code), e.message) from None
        if bucket is not None and not credential.allows(bucket):
            raise Denied(errors.ACCESS_DENIED, f"key {credential.secret_id} may not use {bucket}")
        request._cos_verified = (bucket, key, credential)  # type: ignore[attr-defined]
        return credential

    def _host_bucket(self, request: Request) -> str | None:
        """The bucket the Host header selects, by the same rules as `EdgeResource.target`."""
        host = split_host(request.getHeader(b"host"))
        bucket = self._registry.by_domain(host)
        return bucket.name if bucket is not None else self._registry.name_from_api_host(host)
