"""Multipart uploads (COS InitiateMultipartUpload / UploadPart / Complete / Abort / List).

The SDKs' high-level `upload_file` splits anything over one part (1 MiB by default) into
parts, so without these the most common upload call would fail. An upload lives in
`.cosedge/uploads/<id>/` (an `info.json` and one file per part, named with its number and
ETag) until it is completed or aborted, across restarts as in COS. Parts arrive spooled in
`.cosedge/tmp/` on the same filesystem and are renamed into the upload's folder; completing
concatenates them into a pending object that is published like any upload: atomically.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.threads import deferToThread

from edge.store.folder.writes import PendingObject, UploadSpool
from edge.store.interface import (
    MAX_PARTS,
    MultipartError,
    ObjectMeta,
    Part,
    PendingWrite,
    SpooledBody,
    UploadInfo,
)
from edge.store.statefiles import unlink_quietly, write_atomically

_ID = re.compile(r"^[0-9a-f]{32}$")
_PART = re.compile(r"^(\d{5})-([0-9a-f]{32})\.part$")
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class _StoredPart:
    number: int
    etag: str
    size: int
    modified: float
    path: str


class MultipartUploads:
    """The part files of every upload, under `.cosedge/uploads/` (blocking calls)."""

    def __init__(
        self, state_dir: Path, tmp_dir: Path, new_upload: Callable[[str, str], PendingObject]
    ) -> None:
        self.root = state_dir / "uploads"
        self._tmp_dir = tmp_dir
        self._new_upload = new_upload

    def _folder(self, upload_id: str) -> Path:
        return self.root / upload_id

    def create(self, bucket: str, key: str, meta: ObjectMeta) -> UploadInfo:
        upload_id = secrets.token_hex(16)
        folder = self._folder(upload_id)
        folder.mkdir(parents=True)
        info = UploadInfo(upload_id, bucket, key, time.time(), meta, indexed=True)
        record = {
            "bucket": bucket,
            "key": key,
            "initiated": info.initiated,
            "content_type": meta.content_type,
            "meta": dict(meta.user),
            "indexed": True,
        }
        write_atomically(folder / "info.json", json.dumps(record, ensure_ascii=False).encode())
        return info

    def get(self, upload_id: str, bucket: str, key: str | None = None) -> UploadInfo:
        """The upload, checked to belong to this bucket (and key); NoSuchUpload otherwise."""
        info = self._read(upload_id) if _ID.fullmatch(upload_id or "") else None
        if info is None or info.bucket != bucket or (key is not None and info.key != key):
            raise MultipartError("NoSuchUpload", "The specified upload does not exist.")
        return info

    def _read(self, upload_id: str) -> UploadInfo | None:
        try:
            raw = json.loads((self._folder(upload_id) / "info.json").read_text("utf-8"))
            meta = ObjectMeta(str(raw.get("content_type") or ""), dict(raw.get("meta") or {}))
            return UploadInfo(
                upload_id,
                str(raw["bucket"]),
                str(raw["key"]),
                float(raw["initiated"]),
                meta,
                indexed=bool(raw.get("indexed")),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None  # damaged: as good as absent (the sweeper removes it when old)

    def uploads(self, bucket: str, prefix: str = "") -> list[UploadInfo]:
        if not self.root.is_dir():
            return []
        found = []
        for entry in os.scandir(self.root):
            if _ID.fullmatch(entry.name):
                info = self._read(entry.name)
                if info is not None and info.bucket == bucket and info.key.startswith(prefix):
                    found.append(info)
        return sorted(found, key=lambda i: (i.key, i.initiated))

    def put_part(self, info: UploadInfo, number: int, body: SpooledBody | None) -> str:
        """Store one part (replacing an earlier one with that number); returns its ETag.
        `body` is the spooled request body (None for an empty part).

        Only the part being replaced is looked for, through its `<number>.etag` index
        (uploads from before the index: a glob on the number), so 10,000 parts cost
        10,000 small steps, not a rescan of every part per part. An upload aborted
        meanwhile is NoSuchUpload.
        """
        if not 1 <= number <= MAX_PARTS:
            raise MultipartError("InvalidArgument", f"partNumber must be 1-{MAX_PARTS}")
        folder = self._folder(info.upload_id)
        if body is None:
            body = UploadSpool(self._tmp_dir, 0)
        etag = body.md5.hexdigest()
        body.detach().close()
        source = body.path
        name = f"{number:05d}-{etag}.part"
        index = folder / f"{number:05d}.etag"
        try:
            old: list[str] = [f"{number:05d}-{index.read_text('ascii').strip()}.part"]
        except FileNotFoundError:
            old = [] if info.indexed else [p.name for p in folder.glob(f"{number:05d}-*.part")]
        except OSError:
            old = []
        try:
            os.replace(source, folder / name)
        except FileNotFoundError:
            unlink_quietly(source)
            raise MultipartError("NoSuchUpload", "The specified upload does not exist.") from None
        for stale in old:
            if stale != name:
                unlink_quietly(str(folder / stale))
        temp = folder / f"{number:05d}.etag.{uuid.uuid4().hex}.tmp"
        try:
            temp.write_text(etag, "ascii")
            os.replace(temp, index)
        except FileNotFoundError:
            raise MultipartError("NoSuchUpload", "The specified upload does not exist.") from None
        return str(etag)

    def _parts(self, folder: Path) -> list[_StoredPart]:
        parts = []
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return []
        for entry in entries:
            match = _PART.fullmatch(entry.name)
            if match:
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue  # replaced, or the upload aborted, since it was listed
                parts.append(
                    _StoredPart(
                        int(match.group(1)), match.group(2), st.st_size, st.st_mtime, entry.path
                    )
                )
        return sorted(parts, key=lambda p: p.number)

    def parts(self, info: UploadInfo) -> list[_StoredPart]:
        return self._parts(self._folder(info.upload_id))

    def assemble(self, info: UploadInfo, requested: Sequence[tuple[int, str]]) -> PendingObject:
        """Concatenate the listed parts into a pending object (call in a thread).

        The list must name uploaded parts in ascending order with their ETags, as COS
        checks; a mismatch is InvalidPart / InvalidPartOrder and nothing is written.
        """
        if not requested:
            raise MultipartError("MalformedXML", "CompleteMultipartUpload lists no Part")
        numbers = [n for n, _ in requested]
        if numbers != sorted(set(numbers)):
            raise MultipartError("InvalidPartOrder", "Parts must be listed in ascending order.")
        self._still_there(info)
        stored = {(p.number, p.etag): p for p in self.parts(info)}
        chosen = []
        for number, etag in requested:
            part = stored.get((number, etag.strip('"').lower()))
            if part is None:
                raise MultipartError(
                    "InvalidPart", f"Part {number} was not uploaded or its ETag differs."
                )
            chosen.append(part)
        pending = self._new_upload(info.bucket, info.key)
        try:
            for part in chosen:
                # Each part is opened once and read whole from that open file, so a part
                # replaced after its open no longer matters. One open file at a time: ten
                # thousand at once would run out of descriptors. A part replaced, or the
                # upload aborted, before its open is a COS error, not a crash.
                try:
                    f = open(part.path, "rb")  # noqa: SIM115 - closed just below
                except FileNotFoundError:
                    self._still_there(info)
                    raise MultipartError(
                        "InvalidPart", f"Part {part.number} was replaced while completing."
                    ) from None
                with f:
                    while chunk := f.read(_CHUNK):
                        pending.write(chunk)
            self._still_there(info)  # aborted while assembling: NoSuchUpload
        except BaseException:
            pending.discard()
            raise
        return pending

    def _still_there(self, info: UploadInfo) -> None:
        if self._read(info.upload_id) is None:
            raise MultipartError("NoSuchUpload", "The specified upload does not exist.")

    def discard(self, info: UploadInfo) -> None:
        shutil.rmtree(self._folder(info.upload_id), ignore_errors=True)

    def expire(self, older_than: float, now: float) -> list[UploadInfo]:
        """Remove uploads begun more than `older_than` seconds before `now` and never
        completed or aborted (lifecycle's AbortIncompleteMultipartUpload); returns them.
        A folder without a readable `info.json` that old is removed too."""
        removed = []
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return []
        for entry in entries:
            if not _ID.fullmatch(entry.name):
                continue
            info = self._read(entry.name)
            try:
                began = info.initiated if info is not None else entry.stat().st_mtime
            except FileNotFoundError:
                continue
            if now - began > older_than:
                shutil.rmtree(entry.path, ignore_errors=True)
                if info is not None:
                    removed.append(info)
        return removed


class FolderUploads:
    """The seam's `Uploads` over the part files: blocking work goes to a thread (up to
    10,000 part files per upload), the checks that touch one file stay on the reactor."""

    def __init__(self, parts: MultipartUploads) -> None:
        self.files = parts

    def create(self, bucket: str, key: str, meta: ObjectMeta) -> Deferred[UploadInfo]:
        return deferToThread(self.files.create, bucket, key, meta)

    def get(self, upload_id: str, bucket: str, key: str | None = None) -> Deferred[UploadInfo]:
        return maybeDeferred(self.files.get, upload_id, bucket, key)

    def uploads(self, bucket: str, prefix: str = "") -> Deferred[list[UploadInfo]]:
        return deferToThread(self.files.uploads, bucket, prefix)

    def put_part(self, info: UploadInfo, number: int, body: SpooledBody | None) -> Deferred[str]:
        return maybeDeferred(self.files.put_part, info, number, body)

    def parts(self, info: UploadInfo) -> Deferred[list[Part]]:
        def listed() -> list[Part]:
            return [Part(p.number, p.etag, p.size, p.modified) for p in self.files.parts(info)]

        return deferToThread(listed)

    def complete(
        self, info: UploadInfo, requested: Sequence[tuple[int, str]]
    ) -> Deferred[PendingWrite]:
        return deferToThread(self.files.assemble, info, requested)

    def discard(self, info: UploadInfo) -> Deferred[None]:
        return deferToThread(self.files.discard, info)

    def expire(self, older_than: float, now: float) -> Deferred[list[UploadInfo]]:
        return deferToThread(self.files.expire, older_than, now)
