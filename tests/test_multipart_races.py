"""Multipart races answer COS errors, never a 500, and replacing a part costs one step,
not a rescan of every part.

Run against the code before these fixes, each test fails on its own assertion.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

import edge.store.folder.multipart as multipart_module
import edge.store.folder.writes as writes_module
from edge.store.folder.store import FolderStore as ObjectStore
from edge.store.folder.writes import UploadSpool
from edge.store.interface import MultipartError, ObjectMeta

BUCKET = "b-1"


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    s = ObjectStore(tmp_path / "data", [BUCKET])
    s.prepare()
    return s


def _spool(store: ObjectStore, data: bytes) -> UploadSpool:
    spool = UploadSpool(store.tmp_dir, len(data))
    spool.write(data)
    return spool


def test_put_part_replaces_one_part_without_listing_them(store, monkeypatch):
    """Replacing a part looks only for that number: no folder listing per part (that
    was O(n²) over 10,000 parts), and exactly the old file of that number goes."""
    uploads = store.uploads.files
    info = uploads.create(BUCKET, "m.bin", ObjectMeta())
    for n in range(1, 6):
        uploads.put_part(info, n, _spool(store, b"part%d" % n))
    listed: list[Any] = []
    real_scandir = os.scandir

    def spy(*args: Any, **kwargs: Any) -> Any:
        listed.append(args)
        return real_scandir(*args, **kwargs)

    monkeypatch.setattr(multipart_module.os, "scandir", spy)
    etag = uploads.put_part(info, 3, _spool(store, b"again"))
    assert listed == []
    monkeypatch.undo()
    parts = uploads.parts(info)
    assert [p.number for p in parts] == [1, 2, 3, 4, 5]
    assert parts[2].etag == etag == hashlib.md5(b"again").hexdigest()


def test_put_part_replaces_in_uploads_from_before_the_index(store):
    """An upload started by an older version (no `.etag` index) still gets its part
    replaced, not duplicated."""
    uploads = store.uploads.files
    info = uploads.create(BUCKET, "m.bin", ObjectMeta())
    folder = uploads.root / info.upload_id
    (folder / f"00002-{hashlib.md5(b'old').hexdigest()}.part").write_bytes(b"old")
    legacy = multipart_module.UploadInfo(info.upload_id, BUCKET, "m.bin", 0.0, ObjectMeta())
    uploads.put_part(legacy, 2, _spool(store, b"new"))
    assert [(p.number, p.etag) for p in uploads.parts(info)] == [
        (2, hashlib.md5(b"new").hexdigest())
    ]


def test_part_for_an_aborted_upload_is_no_such_upload(store):
    """A part arriving after the upload was aborted is NoSuchUpload, not an OSError."""
    uploads = store.uploads.files
    info = uploads.create(BUCKET, "m.bin", ObjectMeta())
    uploads.discard(info)
    with pytest.raises(MultipartError) as raised:
        uploads.put_part(info, 1, _spool(store, b"late"))
    assert raised.value.code == "NoSuchUpload"
    assert list(store.tmp_dir.iterdir()) == []


def _race_on_first_write(monkeypatch: pytest.MonkeyPatch, action: Any) -> None:
    """Run `action` once, right after the first chunk of an assembly is written."""
    real_write = writes_module.PendingObject.write
    done: list[bool] = []

    def write(self: Any, data: bytes) -> None:
        real_write(self, data)
        if not done:
            done.append(True)
            action()

    monkeypatch.setattr(writes_module.PendingObject, "write", write)


@pytest.mark.parametrize("race", ["abort", "reupload"])
def test_assemble_races_answer_cos_errors(store, monkeypatch, race):
    """An abort while Complete assembles is NoSuchUpload; a part re-uploaded under it is
    InvalidPart; neither is an OSError (a 500) and no temp file is left."""
    uploads = store.uploads.files
    info = uploads.create(BUCKET, "m.bin", ObjectMeta())
    tags = [uploads.put_part(info, n, _spool(store, b"part%d" % n)) for n in (1, 2)]
    if race == "abort":
        _race_on_first_write(monkeypatch, lambda: uploads.discard(info))
    else:
        _race_on_first_write(
            monkeypatch, lambda: uploads.put_part(info, 2, _spool(store, b"changed"))
        )
    with pytest.raises(MultipartError) as raised:
        uploads.assemble(info, [(1, tags[0]), (2, tags[1])])
    assert raised.value.code == ("NoSuchUpload" if race == "abort" else "InvalidPart")
    assert list(store.tmp_dir.iterdir()) == []
