"""What a copy keeps of its origin's answer, and how a refresh asks the origin again.

A copied object is stored with the origin's `ETag`, `Last-Modified` and `Content-Type`
(`OriginProvenance`, in the store's metadata): the Content-Type is what the object is then
served with (COS keeps the origin's too), and the validators are what `Revalidation` sends
back as `If-None-Match` / `If-Modified-Since` when an operator refreshes the key (SPEC §12).
Only values HTTP carries back unchanged are kept (visible ASCII, bounded), since they are
sent again on every GET or refresh.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.web.http_headers import Headers

from edge.origin.digest import DigestCheck
from edge.store.interface import ObjectMeta, OriginProvenance

_MAX_VALUE = 1024


def _header(headers: Headers, name: bytes) -> str:
    values = headers.getRawHeaders(name)
    if not values:
        return ""
    text = values[-1].decode("latin-1").strip()
    if len(text) > _MAX_VALUE or not all(c == "\t" or " " <= c <= "~" for c in text):
        return ""  # cannot be sent back as it came: better none than a mangled one
    return text


def provenance_of(headers: Headers) -> OriginProvenance:
    """The validators and Content-Type of an origin's 200."""
    return OriginProvenance(
        etag=_header(headers, b"etag"),
        last_modified=_header(headers, b"last-modified"),
        content_type=_header(headers, b"content-type"),
    )


def copy_meta(headers: Headers) -> ObjectMeta:
    """What a copy publishes with: the origin's Content-Type (when it sent one) to serve
    the object with, and the provenance to refresh it by (None when the origin sent none
    of the three: nothing to record, and no metadata write for the copy)."""
    origin = provenance_of(headers)
    if origin == OriginProvenance():
        return ObjectMeta()
    return ObjectMeta(content_type=origin.content_type, origin=origin)


@dataclass(frozen=True)
class Revalidation:
    """A refresh's conditional GET: the validators a stored copy was made from.

    `etag` and `last_modified` are the origin's own, as recorded; an object with no record
    (dropped in by hand, uploaded, or copied before provenance was kept) is asked with
    `If-Modified-Since` its own modification time, so an origin object older than the
    stored one keeps it. A key the bucket lacks has none: its refresh is a plain copy.
    """

    etag: str = ""
    last_modified: str = ""


def revalidate(headers: Headers, revalidation: Revalidation | None) -> None:
    """Make a fetch's request conditional when it is a refresh's (`CopyJob.revalidate`)."""
    if revalidation is None:
        return
    if revalidation.etag:
        headers.setRawHeaders(b"if-none-match", [revalidation.etag.encode("ascii")])
    if revalidation.last_modified:
        value = revalidation.last_modified.encode("ascii")
        headers.setRawHeaders(b"if-modified-since", [value])


class Received:
    """What a copy takes from its origin's 200 besides the bytes: the metadata to publish
    with (`meta`) and the digests the body must match (`sink` to write through, then
    `mismatch` for the reason to store nothing, or None)."""

    def __init__(self, headers: Headers, check_digests: bool = True) -> None:
        self.meta = copy_meta(headers)
        self._digests = DigestCheck.of(headers, check_digests)

    def sink(self, write: Callable[[bytes], None]) -> Callable[[bytes], None]:
        return self._digests.sink(write)

    @property
    def promises_digests(self) -> bool:
        """Whether the origin sent digests of the body to check it against."""
        return bool(self._digests.expected)

    def mismatch(self, md5: bytes) -> str | None:
        return self._digests.mismatch(md5)
