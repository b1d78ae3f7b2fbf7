"""What the S3 client returns: object info, listings, uploads, and the streaming GET handle.

Kept apart from the client so the store built on it can import the result types alone, and so
the parsing of response headers (dates, metadata, sizes) lives in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from xml.etree.ElementTree import Element

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IProtocol, IReactorTime
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse

from edge.s3.bodies import ConsumerFeeder, Discarder
from edge.s3.errors import local_name


@dataclass(frozen=True)
class ObjectInfo:
    """What HEAD (or a GET's headers) says about an object.

    `size` is the whole object's size, also for a ranged GET; `etag` is the store's, quoted, as
    the edge passes it on; `metadata` holds the `x-amz-meta-*` headers with the prefix removed
    and names lower-cased.
    """

    size: int
    etag: str
    last_modified: float
    content_type: str
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ObjectSummary:
    """One entry of a listing."""

    key: str
    size: int
    etag: str
    last_modified: float


@dataclass(frozen=True)
class ListPage:
    """One page of ListObjectsV2; pass `next_continuation_token` back for the next one."""

    contents: list[ObjectSummary]
    common_prefixes: list[str]
    is_truncated: bool
    next_continuation_token: str | None


@dataclass(frozen=True)
class Upload:
    """A multipart upload in progress."""

    key: str
    upload_id: str
    initiated: float


@dataclass(frozen=True)
class Part:
    """One uploaded part of a multipart upload (ListParts); `etag` quoted, as sent."""

    number: int
    etag: str
    size: int
    last_modified: float


class ObjectStream:
    """A GET whose headers have arrived and whose body has not been read yet.

    The body stays in the socket until the caller takes it, with exactly one of: `write_to`
    (into an `IConsumer`, backpressure handled here), `deliver_body` (into the caller's own
    protocol, as `IResponse.deliverBody`), or `discard` (closes the connection). So nothing is
    buffered whatever the object's size, and the caller can answer its own client's headers
    (status, Content-Range) before the first body byte moves.
    """

    def __init__(self, response: IResponse, info: ObjectInfo, clock: IReactorTime, timeout: float):
        self.info = info
        #: 200 for a whole object, 206 for a range.
        self.status: int = response.code
        #: The Content-Range header of a 206 (`bytes 0-9/100`), else None.
        self.content_range: str | None = header_value(response, "content-range")
        #: Bytes in this response's body (the range's length for a 206).
        self.length: int = response.length if response.length != UNKNOWN_LENGTH else info.size
        self._response = response
        self._clock = clock
        self._timeout = timeout
        self._taken = False

    def _take(self) -> None:
        if self._taken:
            raise RuntimeError("the body of an ObjectStream can be taken once")
        self._taken = True

    def write_to(self, consumer: IConsumer) -> Deferred[int]:
        """Stream the body into `consumer`; fires with the byte count or fails S3Unavailable.

        Registers itself as the consumer's streaming producer for the duration, so the
        consumer's pauseProducing pauses the store's socket.
        """
        self._take()
        feeder = ConsumerFeeder(consumer, self._clock, self._timeout)
        self._response.deliverBody(feeder)
        return feeder.finished

    def deliver_body(self, protocol: IProtocol) -> None:
        """Hand the body to `protocol` as `IResponse.deliverBody` does (its transport is a
        push producer the protocol pauses itself); no idle timeout applies."""
        self._take()
        self._response.deliverBody(protocol)

    def discard(self) -> None:
        """Drop the body unread (closing the connection), e.g. when the client went away."""
        self._take()
        self._response.deliverBody(Discarder())


def header_value(response: IResponse, name: str) -> str | None:
    values = response.headers.getRawHeaders(name)
    return values[0] if values else None


def request_id_of(response: IResponse) -> str:
    return header_value(response, "x-amz-request-id") or ""


_dates: dict[str, float] = {}


def _http_date(value: str | None) -> float:
    """The timestamp of an HTTP date, remembered: every hit's GET answers a Last-Modified,
    and parsing one with `email.utils` was most of reading a GET's headers."""
    if not value:
        return 0.0
    stamp = _dates.get(value)
    if stamp is None:
        try:
            stamp = parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            stamp = 0.0
        if len(_dates) >= 10_000:
            _dates.clear()
        _dates[value] = stamp
    return stamp


def iso_date(value: str | None) -> float:
    if not value:
        return 0.0
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def object_info(response: IResponse) -> ObjectInfo:
    # HEAD answers keep Content-Length among the headers (it is the object's, not this body's);
    # GET answers have it moved into `length` by Twisted.
    declared = header_value(response, "content-length")
    if declared is not None and declared.strip().isdigit():
        size = int(declared)
    else:
        size = response.length if response.length != UNKNOWN_LENGTH else 0
    content_range = header_value(response, "content-range")
    if content_range and "/" in content_range:
        total = content_range.rpartition("/")[2].strip()
        if total.isdigit():
            size = int(total)
    metadata: dict[str, str] = {}
    for name, values in response.headers.getAllRawHeaders():
        lname = name.decode("latin-1").lower()
        if lname.startswith("x-amz-meta-"):
            metadata[lname[len("x-amz-meta-") :]] = values[0].decode("latin-1")
    return ObjectInfo(
        size=size,
        etag=header_value(response, "etag") or "",
        last_modified=_http_date(header_value(response, "last-modified")),
        content_type=header_value(response, "content-type") or "binary/octet-stream",
        metadata=metadata,
    )


def metadata_headers(metadata: Mapping[str, str] | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in (metadata or {}).items():
        if not name.isascii() or not value.isascii():
            # S3 carries metadata in HTTP headers; non-ASCII would be signed over one encoding
            # and read by the store in another. Callers encode (e.g. RFC 2047) first.
            raise ValueError(f"metadata must be ASCII: {name!r}")
        headers[f"x-amz-meta-{name.lower()}"] = value
    return headers


def children_named(element: Element, name: str) -> list[Element]:
    return [child for child in element if local_name(child) == name]
