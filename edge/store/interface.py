"""The storage seam: what the web layer, the API and the copier need from a store.

Two stores stand behind it: the folder store (`edge.store.folder`, the embedded default:
one folder per bucket under `data_dir`) and an S3-compatible object store shared by many
edge nodes. Callers hold an `ObjectStore` and never touch files or URLs of object bytes
themselves, so a request flows resource -> store and copier -> store whichever store it is.

Every call that may wait on the network returns a Deferred; the folder store answers with
Deferreds that have already fired, so its hits cost no extra reactor turn. Writes are
create-only by default: a `PendingWrite` becomes visible whole on `publish()` or not at
all, and never replaces an object unless the caller asks (`replace=True`, an uploaded PUT).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from twisted.internet.defer import Deferred
from twisted.web.iweb import IRequest

from edge.problems import CosProblem

MAX_PARTS = 10_000  # COS's limit on the parts of one multipart upload


class MultipartError(CosProblem):
    """A request about an upload that cannot be honoured; `code` is COS's error code."""


class BucketNotEmpty(Exception):
    """A bucket still holds something: it is not removed."""


class KeyConflict(Exception):
    """The key cannot name an object here: it collides with a folder of other keys (or a
    key on its way is an object) in a store that keeps keys as paths."""


class StoreUnavailable(Exception):
    """The store cannot be reached or answered with a server error; the request that
    needed it is answered 503 ServiceUnavailable and nothing is written."""


@dataclass(frozen=True)
class OriginProvenance:
    """What the origin said about an object a copy brought (SPEC §12): its validators, for
    a later refresh's conditional GET, and its Content-Type as sent. Values are kept only
    when HTTP can carry them back unchanged (visible ASCII); "" when the origin sent none."""

    etag: str = ""
    last_modified: str = ""
    content_type: str = ""


@dataclass(frozen=True)
class ObjectMeta:
    """What a PUT said about an object beyond its bytes, or what a copy learnt from its
    origin (`origin`; None for an object no copy brought)."""

    content_type: str = ""
    user: Mapping[str, str] = field(default_factory=dict)  # x-cos-meta-* headers
    origin: OriginProvenance | None = None


@dataclass(frozen=True)
class ListedObject:
    """One entry of a listing page."""

    key: str
    size: int
    mtime: float
    etag: str  # hex MD5 (or the store's own ETag), unquoted


@dataclass(frozen=True)
class ListingPage:
    """One page of a bucket listing, in key order (COS's GET Bucket)."""

    contents: Sequence[ListedObject]
    common_prefixes: Sequence[str]
    truncated: bool
    next_marker: str | None  # the last key or prefix of the page when truncated


@dataclass(frozen=True)
class UploadInfo:
    """A multipart upload in progress."""

    upload_id: str
    bucket: str
    key: str
    initiated: float
    meta: ObjectMeta
    # Folder store: uploads started since parts are indexed keep `<number>.etag` next to
    # each part, so replacing a part finds the one it replaces without listing the folder.
    indexed: bool = False


@dataclass(frozen=True)
class Part:
    """One uploaded part of a multipart upload."""

    number: int
    etag: str  # hex MD5, unquoted
    size: int
    modified: float


class SpooledBody(Protocol):
    """A request body already written to local scratch (`ObjectStore.tmp_dir`), hashed on
    the way: both stores take uploads from there, so no body is held in memory."""

    path: str
    size: int

    @property
    def md5(self) -> Any:
        """The running `hashlib.md5` of the body."""

    def detach(self) -> BinaryIO:
        """Hand the open file over; the spool then no longer deletes it."""


class StoredObject(Protocol):
    """An object opened for reading. The caller must `close()` it when done with it."""

    @property
    def size(self) -> int: ...

    @property
    def mtime(self) -> float: ...

    @property
    def content_type(self) -> str:
        """The Content-Type guessed from the key's extension, for objects stored without
        one (`meta.content_type` is what their upload said, if anything)."""

    @property
    def meta(self) -> ObjectMeta:
        """Metadata a PUT or a copy recorded with the object (empty when none), as stored:
        the web layer leaves out what HTTP cannot carry."""

    def etag(self) -> Deferred[str]:
        """The object's ETag, unquoted (hex MD5 for what the edge wrote)."""

    def send(self, request: IRequest, first: int, length: int) -> Deferred[None]:
        """Send bytes `first` .. `first + length - 1` as the body of `request` (status and
        headers are set, Content-Length included), honouring the transport's flow control,
        then finish the request; the object is closed either way. Fails, leaving the
        request unfinished, when the bytes cannot be sent: the caller answers 503 if nothing
        was written yet and drops the connection otherwise, so a client never takes a
        short body for a whole one."""

    def close(self) -> None: ...


class KeyLock(Protocol):
    """A key's copy lock, held until released (or until its holder dies)."""

    def release(self) -> object:
        """Let go of the lock (a store may answer with a Deferred; nobody waits on it)."""


class DeleteWatch(Protocol):
    """A copy's way to learn that a DELETE of its key came while it ran."""

    def deleted(self) -> bool: ...


class PendingWrite(Protocol):
    """An object being written; never visible under its key until `publish()`."""

    size: int
    deleted_meanwhile: bool

    @property
    def etag(self) -> str:
        """Hex MD5 of what was written so far."""

    @property
    def md5_digest(self) -> bytes: ...

    def write(self, data: bytes) -> None:
        """`append_blocking`, `hash_blocking`, then `written`, on the reactor."""

    def append_blocking(self, data: bytes) -> None:
        """Append `data` to the local file (and the size), without the reactor."""

    def append_all_blocking(self, chunks: Sequence[bytes]) -> None:
        """`append_blocking` for several chunks in one call, without joining them first (a
        copy's write-behind hands its batches over this way)."""

    def hash_blocking(self, data: bytes) -> None:
        """Add `data` to the MD5, without the reactor.

        An origin copy calls these two on worker threads (edge.origin.writebehind), so its
        disk writes and MD5 stay off the reactor thread and run side by side: each is called
        one call at a time and in order, the two may run at the same time (they touch
        nothing in common), and nothing else touches the write meanwhile."""

    def written(self) -> None:
        """On the reactor, after `append_blocking` calls: what they leave to the reactor
        (the S3 store starts uploading the parts they completed)."""

    def open_reader(self) -> int:
        """A new read-only file descriptor of the local file this write fills (the caller
        closes it): it holds every byte a returned `append_blocking` wrote, and stays
        readable after publish or discard. A Mirror fetch's clients read the body from it
        as it arrives, so the bytes are on disk once, not twice (`edge.origin.mirror`)."""

    def publish(self, replace: bool = False, meta: ObjectMeta | None = None) -> Deferred[bool]:
        """Make the object visible whole. Fires True when published, False when the key
        was taken meanwhile (kept; this write is dropped) or deleted meanwhile (a watched
        copy). Any failure discards the write and propagates."""

    def discard(self) -> None:
        """Drop the write; safe to call more than once and after publish."""


class Uploads(Protocol):
    """Multipart uploads (COS Initiate / Upload Part / Complete / Abort / List). Refusals
    are `MultipartError`s carrying COS's code (NoSuchUpload, InvalidPart, ...)."""

    def create(self, bucket: str, key: str, meta: ObjectMeta) -> Deferred[UploadInfo]: ...

    def get(self, upload_id: str, bucket: str, key: str | None = None) -> Deferred[UploadInfo]:
        """The upload, checked to belong to this bucket (and key); NoSuchUpload otherwise."""

    def uploads(self, bucket: str, prefix: str = "") -> Deferred[list[UploadInfo]]:
        """Uploads in progress, by key then initiation time."""

    def put_part(self, info: UploadInfo, number: int, body: SpooledBody | None) -> Deferred[str]:
        """Store one part (replacing an earlier one with that number); fires its ETag."""

    def parts(self, info: UploadInfo) -> Deferred[list[Part]]: ...

    def complete(
        self, info: UploadInfo, requested: Sequence[tuple[int, str]]
    ) -> Deferred[PendingWrite]:
        """The object the listed parts make, ready to publish (with `replace=True`)."""

    def discard(self, info: UploadInfo) -> Deferred[None]:
        """Abort: the upload and its parts are gone."""

    def expire(self, older_than: float, now: float) -> Deferred[list[UploadInfo]]:
        """Abort uploads begun more than `older_than` seconds before `now`."""


class SharedWrites(Protocol):
    """Where API-made state (bucket markers, origin rules) is written so every node of a
    cluster sees it (`edge.store.s3.state`); absent (None) for the folder store, whose
    state is already where every process of the one node reads it."""

    def put(self, name: str, data: bytes, *, create_only: bool = False) -> Deferred[bool]:
        """Store `name` (e.g. `buckets/<bucket>`); False when `create_only` and taken."""

    def delete(self, name: str) -> Deferred[None]: ...

    @property
    def has_copy(self) -> bool:
        """Whether this node holds the state yet (a brand-new one only after its first
        pull): until then a bucket or rule it lacks may exist on another node."""


class ObjectStore(Protocol):
    """All buckets of one edge, wherever their objects live."""

    @property
    def uploads(self) -> Uploads:
        """The multipart uploads of every bucket."""

    @property
    def tmp_dir(self) -> Path:
        """Local scratch on this node for request bodies and copies being written."""

    def has_bucket(self, bucket: str) -> bool:
        """Whether this store serves `bucket` (known in memory; no I/O)."""

    def bucket_created(self, bucket: str) -> float:
        """When the bucket's storage was made, for GET Service (0 when unknown); at most
        a local stat, never a network call."""

    def add_bucket(self, bucket: str) -> Deferred[None]:
        """Create the bucket's storage (PUT Bucket); existing storage is adopted as it is."""

    def remove_bucket(self, bucket: str) -> Deferred[None]:
        """Remove an empty bucket's storage and forget it; `BucketNotEmpty` otherwise,
        and nothing of it is lost."""

    def bucket_is_empty(self, bucket: str) -> Deferred[bool]: ...

    def list_page(
        self, bucket: str, prefix: str, marker: str, delimiter: str, max_keys: int
    ) -> Deferred[ListingPage]:
        """One page of GET Bucket: keys after `marker` starting with `prefix`, in order,
        rolled up at `delimiter` into common prefixes; `prefix` and `marker` have passed
        `validate_prefix`."""

    def forget_bucket(self, bucket: str) -> None:
        """Stop serving a bucket another process or node removed."""

    def open_object(
        self, bucket: str, key: str, request: IRequest | None = None
    ) -> Deferred[StoredObject | None]:
        """The object, or None when the key holds none.

        `request` is the GET or HEAD the object is opened for, a hint for a store that
        fetches bytes over the network: from its method, `Range` and conditional headers it
        can fetch in one round trip just what will be sent (or only the metadata). A store
        that reads local files ignores it, so a hit pays nothing for the hint. `send` works
        for any range either way."""

    def exists(self, bucket: str, key: str) -> Deferred[bool]: ...

    def delete_object(self, bucket: str, key: str) -> Deferred[bool]:
        """Remove an object; wins over a copy of the key that is running meanwhile."""

    def new_upload(
        self,
        bucket: str,
        key: str,
        spool: SpooledBody | None = None,
        watch: DeleteWatch | None = None,
        meta: ObjectMeta | None = None,
    ) -> PendingWrite:
        """A write that becomes `bucket/key` on publish: empty to be written to, or the
        spooled request body `spool` taken over as it is. With `watch` (an origin copy), a
        DELETE of the key meanwhile makes publishing drop it. `meta` is what `publish` is
        expected to be given, known before the first byte (a copy's origin headers): a store
        that sends big objects while they are written starts with it."""

    def refuse_unsafe(self, bucket: str, key: str) -> None:
        """Raise `UnsafePath` before a copy spends bandwidth on an object it could never
        publish (the folder store's symbolic links); a no-op where nothing can be unsafe."""

    def lock_key(self, bucket: str, key: str) -> Deferred[KeyLock | None]:
        """The key's copy lock, shared by every process and node on this store, or None
        when another holds it: one origin fetch per key. Fails when the lock cannot be
        judged at all (its coordinator unreachable); then no copy should start."""

    def watch_deletes(self, bucket: str, key: str) -> DeleteWatch: ...

    def forget_deletes(self, bucket: str, key: str) -> None: ...

    def sweep(self, now: float) -> Deferred[dict[str, int]]:
        """Remove what crashed writers left (temp files, stale metadata and locks; expired
        uploads are `uploads.expire`'s); fires counts by kind, for the sweeper's log."""
