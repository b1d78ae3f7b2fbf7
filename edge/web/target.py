"""Where a request points: the bucket (from the Host or the first path segment) and the key.

The key is cut from the raw request target and percent-decoded here, once, never from
Twisted's `postpath` (which splits on `/` before decoding, so a `%2F` would vanish into a
segment and `//` into an empty one): a key may hold either, and means what it says. A key
that can never be valid is refused as 400 InvalidURI before any resource sees it.
"""

from __future__ import annotations

import urllib.parse
from typing import NamedTuple

from twisted.web.server import Request

from edge.api import errors
from edge.api.buckets import BucketRegistry, split_host
from edge.api.errors import CosError
from edge.config import BucketConfig
from edge.store.keys import InvalidKey, validate_key


class Target(NamedTuple):
    """Where a request points: a bucket (by name; None for the service root), whether it
    exists, and the key as decoded and as sent (None for the bucket itself)."""

    bucket_name: str | None
    bucket: BucketConfig | None
    key: str | None
    raw_key: bytes  # still percent-encoded: the redirect repeats the key as requested
    query: bytes | None


class BadTarget(Exception):
    """A request target no bucket or key can ever match: the COS error to answer."""

    def __init__(self, error: CosError) -> None:
        super().__init__(error.code)
        self.error = error


def target_of(request: Request, registry: BucketRegistry) -> Target:
    """Resolve bucket and key, or raise `BadTarget` for a key that is never valid.

    The Host picks the bucket by a configured domain, then by the API form
    `<bucket>.<anything>.myqcloud.com`; otherwise the first path segment names it.
    """
    uri = request.uri
    host_header = request.getHeader(b"host")
    if uri[:1] != b"/" and uri[:8].lower().startswith((b"http://", b"https://")):
        # Absolute form (RFC 9112 §3.2.2): the target's authority names the host and
        # the Host header is ignored.
        rest = uri.split(b"//", 1)[1]
        cut = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=-1)
        authority, remainder = (rest, b"") if cut < 0 else (rest[:cut], rest[cut:])
        host_header = authority.rpartition(b"@")[2]
        uri = remainder if remainder.startswith(b"/") else b"/" + remainder
        # The Host header is replaced, not just ignored here: the signature check, the
        # errors' <Resource> and every other reader of Host must see the same bucket
        # (a signature for bucket A sent as `http://B/...` with `Host: A` was accepted).
        if request.getHeader(b"host") != host_header:
            request.requestHeaders.setRawHeaders(b"host", [host_header])
            request.__dict__.pop("_cos_headers", None)
    raw_path, sep, query = uri.partition(b"?")
    query_or_none = query if sep else None
    host = split_host(host_header)
    bucket = registry.by_domain(host)
    name = bucket.name if bucket is not None else registry.name_from_api_host(host)
    if name is not None:
        raw_key = raw_path[1:] if raw_path.startswith(b"/") else raw_path
    else:
        name_raw, _, raw_key = raw_path.lstrip(b"/").partition(b"/")
        if not name_raw:
            return Target(None, None, None, b"", query_or_none)
        name = _decode(name_raw)
    if bucket is None:
        bucket = registry.get(name)
    if not raw_key:
        return Target(name, bucket, None, b"", query_or_none)
    key = _decode(raw_key)
    try:
        validate_key(key)
    except InvalidKey:
        raise BadTarget(errors.INVALID_URI) from None
    return Target(name, bucket, key, raw_key, query_or_none)


_PERCENT = ord("%")  # a byte value: `in` with an int is ten times `in` with b"%"


def _decode(raw: bytes) -> str:
    try:
        if _PERCENT not in raw:  # most keys: no escapes to undo (unquote is a tenth of a hit)
            return raw.decode("utf-8")
        return urllib.parse.unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise BadTarget(errors.INVALID_URI) from None
