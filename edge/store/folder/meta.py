"""Metadata of uploaded objects (Content-Type, x-cos-meta-*) and of copied ones (the
origin's ETag, Last-Modified and Content-Type: `origin`), kept beside the folders.

A bucket folder holds nothing but the objects' bytes, so what a PUT said about an object
(or what its origin said, for a copy) is kept under `.cosedge/meta/<bucket>/` in a small
JSON record per key, written atomically and tied to the identity of the file it describes:
a file replaced by hand since no longer carries the old record's headers, and the sweeper
removes records whose file is gone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import stat as statmod
import uuid

from edge.store.folder.layout import FileIdentity, FolderLayout, identity_of
from edge.store.interface import ObjectMeta, OriginProvenance
from edge.store.keys import UnsafePath, validate_key


def _provenance(raw: object) -> OriginProvenance | None:
    """A record's `origin` (what a copy's origin said), None when absent or not a mapping
    of strings (a hand-edited file)."""
    if not isinstance(raw, dict):
        return None
    values = {name: raw.get(name, "") for name in ("etag", "last_modified", "content_type")}
    if not all(isinstance(v, str) for v in values.values()):
        return None
    return OriginProvenance(**values)


_KEPT = 10_000  # records (and record paths) kept in memory for hits
_HEX_MD5 = re.compile(r"[0-9a-f]{32}")


@dataclasses.dataclass(frozen=True)
class Recorded:
    """A record as parsed: the key and file identity it describes, what it says, and the
    ETag (hex MD5) the store computed when it published that file (None in records of
    earlier releases)."""

    key: object
    identity: tuple[object, ...]
    meta: ObjectMeta
    etag: str | None = None


class MetaRecords:
    """The metadata records of every bucket under one data folder."""

    def __init__(self, layout: FolderLayout) -> None:
        self._layout = layout
        # Buckets that have upload metadata at all: hits on the others skip the lookup.
        self.buckets: set[str] = set()
        # What hits read, kept: each key's record path (a SHA-256 and a path join), and
        # each record as parsed, by the record file's stat. A record is only ever replaced
        # by a rename (a new inode), so a hit costs one stat of it, not an open and a JSON
        # parse: in a migrated bucket every copy has a record, and reading it was a third
        # of a 4 KiB hit.
        self._paths: dict[tuple[str, str], str] = {}
        self._parsed: dict[str, tuple[tuple[int, int, int], Recorded]] = {}

    def refresh(self) -> None:
        """Learn which buckets have upload metadata (hits elsewhere skip the lookup). Run
        on the state timer too: with workers, another process's first PUT with a
        Content-Type into a bucket must reach this one's hits."""
        try:
            with os.scandir(self._layout.state_dir / "meta") as entries:
                self.buckets |= {e.name for e in entries if e.is_dir()}
        except FileNotFoundError:
            pass

    def _meta_path(self, bucket: str, key: str) -> str:
        folders, name = self._meta_location(bucket, key)
        return str(self._layout.state_dir.joinpath(*folders, name))

    def _meta_location(self, bucket: str, key: str) -> tuple[tuple[str, ...], str]:
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        return ("meta", bucket, digest[:2]), f"{digest}.json"

    def read(self, bucket: str, key: str, identity: FileIdentity) -> ObjectMeta | None:
        """Metadata saved by a PUT, if the file is still the one that PUT wrote."""
        recorded = self.lookup(bucket, key, identity)
        return None if recorded is None else recorded.meta

    def lookup(self, bucket: str, key: str, identity: FileIdentity) -> Recorded | None:
        """The record of the file `identity` names, if one was saved for that very file."""
        if bucket not in self.buckets:
            return None
        path = self._paths.get((bucket, key))
        if path is None:
            if len(self._paths) >= _KEPT:
                self._paths.clear()
            path = self._paths[(bucket, key)] = self._meta_path(bucket, key)
        try:
            st = os.stat(path)
        except OSError:
            return None
        kept = self._parsed.get(path)
        record: Recorded | None
        if kept is not None and kept[0] == (st.st_ino, st.st_mtime_ns, st.st_size):
            record = kept[1]
        else:
            record = self._load(path)
        if record is None:
            return None
        if record.key != key or record.identity != identity:
            return None  # replaced by hand since: its metadata no longer applies
        return record

    def _load(self, path: str) -> Recorded | None:
        """A record read and parsed, kept under the stat of the file it was read from."""
        try:
            with open(path, encoding="utf-8") as f:
                st = os.fstat(f.fileno())
                raw = json.load(f)
            meta = ObjectMeta(
                str(raw.get("content_type") or ""),
                dict(raw.get("meta") or {}),
                _provenance(raw.get("origin")),
            )
            etag = raw.get("etag")
            record = Recorded(
                raw.get("key"),
                tuple(raw.get("identity", ())),
                meta,
                etag if isinstance(etag, str) and _HEX_MD5.fullmatch(etag) else None,
            )
        except (OSError, ValueError, AttributeError, TypeError):
            return None
        if len(self._parsed) >= _KEPT:
            self._parsed.clear()
        self._parsed[path] = ((st.st_ino, st.st_mtime_ns, st.st_size), record)
        return record

    def clear(self, bucket: str, key: str) -> None:
        folders, name = self._meta_location(bucket, key)
        try:
            with self._layout.state_folder(*folders) as folder_fd:
                os.unlink(name, dir_fd=folder_fd)
        except (FileNotFoundError, NotADirectoryError):
            pass

    def write(
        self,
        bucket: str,
        key: str,
        meta: ObjectMeta,
        identity: FileIdentity | None = None,
        durable: bool = True,
        etag: str | None = None,
    ) -> None:
        """Save a PUT's metadata, writing only below `.cosedge/meta` (reached without links).

        `identity` is the published file's (`PendingObject.identity`): two PUTs racing
        must each describe their own file, so the object is stated (without following a
        link) only when the caller has none. `durable=False` skips the fsyncs: a record
        written in the reactor turn that published its object (so no hit in this process
        sees the object without it), made durable by a second, durable write after."""
        folders, name = self._meta_location(bucket, key)
        if identity is None:
            with self._layout.bucket_parent(bucket, key, create=False) as (parent_fd, object_name):
                st = os.stat(object_name, dir_fd=parent_fd, follow_symlinks=False)
            identity = identity_of(st)
        record: dict[str, object] = {
            "key": key,
            "identity": list(identity),
            "content_type": meta.content_type,
            "meta": meta.user,
        }
        if meta.origin is not None:
            record["origin"] = dataclasses.asdict(meta.origin)
        if etag is not None:  # the published file's MD5: no process hashes it again
            record["etag"] = etag
        with self._layout.state_folder(*folders, create=True) as folder_fd:
            self.buckets.add(bucket)
            temp = f"{name}.{uuid.uuid4().hex}.tmp"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(temp, flags, 0o644, dir_fd=folder_fd)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(record, f, ensure_ascii=False)
                f.flush()
                if durable:
                    os.fsync(f.fileno())
            os.replace(temp, name, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
            if durable:
                os.fsync(folder_fd)  # the rename itself survives a crash only with its folder

    def sweep(self) -> int:
        """Remove metadata whose object is gone or was replaced by hand (a delete made
        outside the API, a crash between publish and delete): it would never apply
        again. Buckets the edge does not serve now are left alone; they may come back."""
        removed = 0
        meta_root = self._layout.state_dir / "meta"
        for bucket in list(self._layout.bucket_dirs):
            for path in sorted((meta_root / bucket).glob("??/*.json")):
                try:
                    read = path.stat()
                    raw = json.loads(path.read_text(encoding="utf-8"))
                    key = raw["key"]
                    validate_key(key)
                except (OSError, ValueError, KeyError, TypeError):
                    continue  # unreadable now (being written?): judged on the next sweep
                if self._meta_matches(bucket, key, raw.get("identity")):
                    continue
                try:
                    # A PUT may have renamed a fresh record into place since it was read:
                    # only the record that was judged is removed.
                    if path.stat().st_ino == read.st_ino:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:
                    pass
        return removed

    def _meta_matches(self, bucket: str, key: str, identity: object) -> bool:
        try:
            with self._layout.bucket_parent(bucket, key, create=False) as (parent_fd, name):
                st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except (OSError, UnsafePath):
            return False
        return statmod.S_ISREG(st.st_mode) and list(identity_of(st)) == identity

    def remove_bucket(self, bucket: str) -> None:
        shutil.rmtree(self._layout.state_dir / "meta" / bucket, ignore_errors=True)
        self.buckets.discard(bucket)
