"""An object of the S3 store opened for reading: its headers in hand, its body (if fetched)
still in the store's socket, streamed into the client's request with backpressure.

A hit costs one request to the store (SPEC §8): `open_object` sends the client's own `Range`
with its GET, or only a HEAD when the caller will most likely not send a body (HEAD,
conditionals). `send` streams the already-open body when it is exactly the range asked for,
and otherwise fetches that range with `If-Match` on the ETag it answered with, so one response
never mixes two versions of a replaced object. Nothing is ever read into memory whole.
"""

from __future__ import annotations

import re
from typing import Any, cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IConsumer
from twisted.web.iweb import IRequest

from edge.s3 import ObjectInfo, ObjectStream, S3Client, S3Error, S3Unavailable
from edge.store.interface import ObjectMeta, OriginProvenance, StoreUnavailable
from edge.store.s3.calls import StoreGate

#: Types a store reports when nobody gave one: the key's extension says more.
UNSET_TYPES = frozenset({"", "binary/octet-stream"})
USER_META = "x-cos-meta-"

_ONE_RANGE = re.compile(r"^bytes=(\d+-\d*|-\d+)$")
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def single_range(header: str | None) -> str | None:
    """The client's `Range` when it is one byte range the store can answer as the edge
    would (`bytes=a-b`, `bytes=a-`, `bytes=-n`); None for anything else (multiple ranges,
    other units, garbage), which the edge answers with the whole object."""
    if not header:
        return None
    value = header.strip().replace(" ", "")
    return value if _ONE_RANGE.fullmatch(value) else None


#: Metadata names (after `x-amz-meta-`) a copy keeps its origin's headers under; never
#: served as `x-cos-meta-*`, and an upload's own metadata cannot set them.
ORIGIN_META = "cosedge-origin-"
_PROVENANCE = {"etag": "etag", "last-modified": "last_modified", "content-type": "content_type"}


def origin_metadata(origin: OriginProvenance | None) -> dict[str, str]:
    """A copy's provenance as store metadata names (only the values the origin sent)."""
    if origin is None:
        return {}
    return {
        ORIGIN_META + name: getattr(origin, attribute)
        for name, attribute in _PROVENANCE.items()
        if getattr(origin, attribute)
    }


def user_meta(info: ObjectInfo) -> ObjectMeta:
    """What the PUT recorded: `x-amz-meta-*` back under their COS names; a copy's
    provenance (`cosedge-origin-*`) apart from them."""
    user: dict[str, str] = {}
    origin: dict[str, str] = {}
    for name, value in info.metadata.items():
        lowered = name.lower()
        if lowered.startswith(ORIGIN_META):
            attribute = _PROVENANCE.get(lowered[len(ORIGIN_META) :])
            if attribute is not None:
                origin[attribute] = value
        else:
            user[f"{USER_META}{name}"] = value
    stored = "" if info.content_type in UNSET_TYPES else info.content_type
    return ObjectMeta(stored, user, OriginProvenance(**origin) if origin else None)


def _fetched_range(stream: ObjectStream, size: int) -> tuple[int, int]:
    """(first, length) of the bytes in the stream's body."""
    if stream.status == 206 and stream.content_range:
        match = _CONTENT_RANGE.fullmatch(stream.content_range.strip())
        if match:
            first, last = int(match.group(1)), int(match.group(2))
            return first, last - first + 1
        return -1, -1  # a range we cannot read: never reused
    return 0, size


class S3Object:
    """An object opened by `S3Store.open_object`; see the module docstring."""

    def __init__(
        self,
        client: S3Client,
        gate: StoreGate,
        store_bucket: str,
        key: str,
        info: ObjectInfo,
        content_type: str,
        stream: ObjectStream | None = None,
    ) -> None:
        self._client = client
        self._gate = gate
        self._store_bucket = store_bucket
        self._key = key
        self.info = info
        self._content_type = content_type
        self._stream = stream
        self._fetched = _fetched_range(stream, info.size) if stream is not None else None

    @property
    def size(self) -> int:
        return self.info.size

    @property
    def mtime(self) -> float:
        return self.info.last_modified

    @property
    def content_type(self) -> str:
        return self._content_type

    @property
    def meta(self) -> ObjectMeta:
        return user_meta(self.info)

    def etag(self) -> Deferred[str]:
        return succeed(self.info.etag.strip('"'))

    @property
    def fetched(self) -> tuple[int, int] | None:
        """(first, length) of the body opened with the object, None after a HEAD."""
        return self._fetched

    def send(self, request: IRequest, first: int, length: int) -> Deferred[None]:
        return Deferred.fromCoroutine(self._send(request, first, length))

    async def _send(self, request: IRequest, first: int, length: int) -> None:
        try:
            stream = self._stream if self._fetched == (first, length) else None
            self._stream = None
            if stream is None:
                self.close()  # the body opened with the object is not this range
                self._stream = None
                if length <= 0:
                    request.finish()
                    return
                stream = await self._gate.run("GET", self._fetch(first, length))
            try:
                await stream.write_to(cast(IConsumer, request))
            except S3Unavailable as e:
                if _client_gone(request):
                    return  # our client hung up; the store is fine
                self._gate.failed(f"GET {self._store_bucket}/{self._key}", str(e))
                raise StoreUnavailable(str(e)) from None
            request.finish()
        finally:
            self.close()

    async def _fetch(self, first: int, length: int) -> ObjectStream:
        whole = first == 0 and length == self.info.size
        wanted = None if whole else f"bytes={first}-{first + length - 1}"
        try:
            stream = await self._client.get_object(
                self._store_bucket, self._key, wanted, if_match=self.info.etag or None
            )
        except S3Error as e:
            if isinstance(e, S3Unavailable) or e.code != "PreconditionFailed":
                raise
            stream = None
        if stream is None:
            # Replaced or deleted since it was opened: what was promised cannot be sent.
            raise StoreUnavailable(f"{self._store_bucket}/{self._key} changed while being sent")
        if _fetched_range(stream, self.info.size) != (first, length):
            stream.discard()  # a store that ignored the Range: never send the wrong bytes
            raise StoreUnavailable(f"store did not answer {wanted} of {self._key} as asked")
        return stream

    def close(self) -> None:
        """Drop a body nobody took (closing its connection to the store)."""
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.discard()


def _client_gone(request: Any) -> bool:
    return bool(getattr(request, "_disconnected", False))
