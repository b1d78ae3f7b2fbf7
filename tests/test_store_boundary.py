"""The store never leaves a bucket folder (or `.cosedge`) through a symbolic link, keeps
hashing and folder fsyncs off the reactor thread, and lets a DELETE win over a running
copy.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import gatherResults

import edge.store.folder.etags as etags_module
import edge.store.folder.layout as layout_module
import edge.store.keys as keys_module
from edge.store.folder.keylocks import KeyLocks
from edge.store.folder.store import FolderStore as ObjectStore
from edge.store.folder.writes import UploadSpool
from edge.store.interface import ObjectMeta
from edge.testing.deferreds import fired

BUCKET = "b-1"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_bytes(b"not yours")
    return folder


@pytest.fixture
def store(tmp_path: Path, outside: Path) -> ObjectStore:
    """A store whose bucket holds `escape -> outside` and `a/deeper -> outside`."""
    s = ObjectStore(tmp_path / "data", [BUCKET])
    s.prepare()
    root = tmp_path / "data" / BUCKET
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "a").mkdir()
    (root / "a" / "deeper").symlink_to(outside, target_is_directory=True)
    (root / "a" / "file.txt").write_bytes(b"in a")
    return s


def tree(path: Path) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(root, name), path)
        for root, dirs, files in os.walk(path)
        for name in files + dirs
    )


def refused(raised: pytest.ExceptionInfo[BaseException]) -> None:
    """The failure is the store's refusal of a path through a link, nothing else."""
    assert type(raised.value).__name__ == "UnsafePath", raised.value


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- the helper --------------------------------------------------------------------------


def test_open_parent_walks_real_folders_and_creates_them(tmp_path):
    """`_open_parent` creates missing folders and hands back the parent's descriptor and
    the file name; a file where a folder is needed is NotADirectoryError, as before."""
    root = tmp_path / "root"
    root.mkdir()
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        before = fd_count()
        fd, name = layout_module.open_parent(root_fd, "x/y/z.txt", True)
        try:
            assert name == "z.txt"
            assert os.path.samestat(os.fstat(fd), os.stat(root / "x" / "y"))
        finally:
            os.close(fd)
        fd, name = layout_module.open_parent(root_fd, "top.txt", False)
        os.close(fd)
        assert name == "top.txt"
        (root / "plain").write_bytes(b"")
        with pytest.raises(NotADirectoryError):
            layout_module.open_parent(root_fd, "plain/z.txt", True)
        with pytest.raises(FileNotFoundError):
            layout_module.open_parent(root_fd, "missing/z.txt", False)
        assert fd_count() == before  # nothing leaks on success or failure
    finally:
        os.close(root_fd)


@pytest.mark.parametrize("key", ["escape/x.txt", "escape/new/x.txt", "a/deeper/new/x.txt"])
def test_open_parent_refuses_any_folder_link(store, outside, key):
    """A link anywhere on the key's folder path is UnsafePath, even with create=True, and
    no folder is created behind it."""
    with store.layout.bucket_fd(BUCKET) as root_fd:
        with pytest.raises(keys_module.UnsafePath, match="symbolic link"):
            layout_module.open_parent(root_fd, key, True)
    assert tree(outside) == ["secret.txt"]


# -- write paths -------------------------------------------------------------------------


@pytest.mark.parametrize("replace", [False, True])
@pytest_twisted.ensureDeferred
async def test_publish_below_a_folder_link_writes_nothing(store, outside, replace):
    """Neither a copy's create-only link nor a PUT's rename goes through a folder link:
    publishing fails with UnsafePath and leaves no file behind the link nor in tmp."""
    pending = store.new_upload(BUCKET, "escape/new/x.txt")
    pending.write(b"planted")
    with pytest.raises(Exception) as raised:
        await pending.publish(replace=replace)
    assert tree(outside) == ["secret.txt"]
    refused(raised)
    assert list(store.tmp_dir.iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_spooled_upload_below_a_folder_link_writes_nothing(store, outside):
    """An uploaded body spooled to tmp is refused the same way."""
    spool = UploadSpool(store.tmp_dir, 1000)
    spool.write(b"planted")
    pending = store.new_upload(BUCKET, "a/deeper/x.txt", spool)
    with pytest.raises(Exception) as raised:
        await pending.publish(replace=True)
    assert tree(outside) == ["secret.txt"]
    refused(raised)
    assert list(store.tmp_dir.iterdir()) == []


def test_delete_below_a_folder_link_removes_nothing(store, outside):
    """DELETE of `escape/secret.txt` is UnsafePath; the file behind the link stays."""
    with pytest.raises(Exception) as raised:
        fired(store.delete_object(BUCKET, "escape/secret.txt"))
    assert (outside / "secret.txt").read_bytes() == b"not yours"
    refused(raised)


def test_delete_still_removes_and_prunes_inside(store):
    """An ordinary delete removes the file and the folders it leaves empty, no more."""
    root = store.data_dir / BUCKET
    (root / "p" / "q").mkdir(parents=True)
    (root / "p" / "q" / "r.txt").write_bytes(b"r")
    assert fired(store.delete_object(BUCKET, "p/q/r.txt")) is True
    assert not (root / "p").exists()
    assert fired(store.delete_object(BUCKET, "p/q/r.txt")) is False
    assert fired(store.delete_object(BUCKET, "a/file.txt")) is True
    assert (root / "a").is_dir()  # still holds the `deeper` link


def test_write_meta_below_a_folder_link_is_refused(store, outside):
    """Metadata is never written for (nor stated through) a key below a folder link."""
    with pytest.raises(Exception) as raised:
        store.meta.write(BUCKET, "escape/secret.txt", ObjectMeta("text/plain"))
    assert not (store.state_dir / "meta").exists() or tree(store.state_dir / "meta") == []
    refused(raised)


def test_prepare_refuses_a_linked_state_folder(tmp_path, outside):
    """A `.cosedge` that is a link to elsewhere stops the start instead of creating its
    folders there and sweeping the files it finds."""
    (outside / "tmp").mkdir()
    (outside / "tmp" / "precious.part").write_bytes(b"keep me")
    data = tmp_path / "data"
    data.mkdir()
    (data / ".cosedge").symlink_to(outside, target_is_directory=True)
    with pytest.raises(Exception) as raised:
        ObjectStore(data, [BUCKET]).prepare()
    assert (outside / "tmp" / "precious.part").read_bytes() == b"keep me"
    refused(raised)


# -- listing -----------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["escape/", "escape/secret", "a/deeper/", "a/"])
def test_iter_keys_never_follows_a_folder_link(store, prefix):
    """No prefix, even one naming a linked folder, lists what lies behind the link."""
    keys = list(store.listing.iter_keys(BUCKET, prefix))
    assert all("secret" not in k for k in keys)
    assert keys == (["a/file.txt"] if prefix == "a/" else [])


def test_iter_keys_never_lists_the_state_folder(tmp_path):
    """A bucket folder that is a link to the data folder itself does not expose
    `.cosedge` (temp files, metadata, locks) in its listing."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "b-1").symlink_to(data, target_is_directory=True)
    (data / "own.txt").write_bytes(b"own")
    s = ObjectStore(data, [BUCKET])
    s.prepare()
    (s.tmp_dir / "x.part").write_bytes(b"temp")
    assert sorted(s.listing.iter_keys(BUCKET)) == ["own.txt"]


@pytest.mark.parametrize(
    "prefix",
    ["", "a", "a/", "a/b", "..", "..a", "a/.", "a/..", "dir/sub/", "图"],
)
def test_good_prefixes(prefix):
    """Partial last segments (even `.`/`..`, since `..a` is a key) and trailing '/'."""
    assert keys_module.validate_prefix(prefix) == prefix


@pytest.mark.parametrize(
    "prefix",
    ["../", "../../x", "a/../", "a/./b", "./", "a//b", "/a", "a\\b", "a\0", "a\x1f", "a\x7f"],
)
def test_bad_prefixes(prefix):
    """Complete `.`/`..`/empty segments, leading '/', backslash and control characters."""
    with pytest.raises(keys_module.InvalidKey):
        keys_module.validate_prefix(prefix)


# -- a DELETE wins over a running copy -----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_delete_from_another_worker_drops_the_running_copy(tmp_path):
    """Two stores on one data folder stand for two worker processes: while one copies
    (holding the key's lock), the other deletes the key; the copy then publishes nothing
    and says why, and once the copy is done the locks folder is empty again."""
    copier = ObjectStore(tmp_path / "data", [BUCKET])
    copier.prepare()
    deleter = ObjectStore(tmp_path / "data", [BUCKET])
    deleter.prepare(sweep=False)
    lock = KeyLocks(copier.state_dir).acquire(BUCKET, "k.txt")
    assert lock is not None
    watch = copier.watch_deletes(BUCKET, "k.txt")
    pending = copier.new_upload(BUCKET, "k.txt", watch=watch)
    pending.write(b"old copy")
    assert fired(deleter.delete_object(BUCKET, "k.txt")) is False  # nothing there yet
    assert await pending.publish() is False
    assert pending.deleted_meanwhile
    assert not fired(copier.exists(BUCKET, "k.txt"))
    copier.forget_deletes(BUCKET, "k.txt")
    lock.release()
    assert list((copier.state_dir / "locks").iterdir()) == []
    # The next copy is not haunted by the old delete.
    fresh = copier.new_upload(BUCKET, "k.txt", watch=copier.watch_deletes(BUCKET, "k.txt"))
    fresh.write(b"new copy")
    assert await fresh.publish() is True


def test_delete_without_a_copy_leaves_no_trace(store):
    """A DELETE with no copy running takes and drops the key's lock: nothing stays in
    the locks folder."""
    assert fired(store.delete_object(BUCKET, "a/file.txt")) is True
    locks = store.state_dir / "locks"
    assert not locks.exists() or list(locks.iterdir()) == []


# -- hashing and fsync off the reactor ----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_large_file_is_hashed_once_in_its_own_pool(store, monkeypatch):
    """Two requests for the same never-hashed large file share one hash, which runs in
    the hashing pool (not the reactor's pool that DNS lookups use)."""
    body = os.urandom(3 * 1024 * 1024)
    (store.data_dir / BUCKET / "big.iso").write_bytes(body)
    seen: list[str] = []
    for name in ("hash_fd",):
        real = getattr(etags_module, name, None)
        if real is not None:

            def spy(arg: Any, _real: Any = real) -> str:
                seen.append(threading.current_thread().name)
                return str(_real(arg))

            monkeypatch.setattr(etags_module, name, spy)
    first = fired(store.open_object(BUCKET, "big.iso"))
    second = fired(store.open_object(BUCKET, "big.iso"))
    assert first is not None and second is not None
    try:
        etags = await gatherResults([first.etag(), second.etag()])
    finally:
        first.file.close()
        second.file.close()
    assert etags == [hashlib.md5(body).hexdigest()] * 2
    assert len(seen) == 1
    assert "cosedge-hash" in seen[0]


@pytest_twisted.ensureDeferred
async def test_publish_fsyncs_nothing_on_the_reactor_thread(store, monkeypatch):
    """Both the file's and the folder's fsync of a publish run in a thread."""
    calls: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        calls.append(threading.current_thread().name)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    pending = store.new_upload(BUCKET, "n/ew.txt")
    pending.write(b"new")
    assert await pending.publish() is True
    assert len(calls) == 2
    assert threading.main_thread().name not in calls


@pytest_twisted.ensureDeferred
async def test_describe_lists_sizes_and_etags(store):
    """`describe` gives size and MD5 of small and large files and skips vanished keys."""
    root = store.data_dir / BUCKET
    (root / "s.txt").write_bytes(b"small")
    big = os.urandom(1024 * 1024 + 5)
    (root / "l.bin").write_bytes(big)
    rows = await store.listing.describe(BUCKET, ["l.bin", "gone.txt", "s.txt"])
    assert [(k, size, etag) for k, size, _, etag in rows] == [
        ("l.bin", len(big), hashlib.md5(big).hexdigest()),
        ("s.txt", 5, hashlib.md5(b"small").hexdigest()),
    ]


def test_reads_through_folder_links_are_judged_by_the_file_opened(store, tmp_path, monkeypatch):
    """A read below a folder link that leaves the bucket answers "no such object" (and the
    link's target stays unread), one below a folder link that stays inside the bucket is
    served, and so are ordinary nested keys; with /proc unreadable the path is resolved
    instead, with the same verdicts."""
    root = tmp_path / "data" / BUCKET
    (root / "a" / "inside").symlink_to(root / "a", target_is_directory=True)

    def read(key: str) -> bytes | None:
        obj = fired(store.open_object(BUCKET, key))
        if obj is None:
            return None
        try:
            return os.pread(obj.file.fileno(), 100, 0)
        finally:
            obj.close()

    def verdicts() -> list[bytes | None]:
        return [read(k) for k in ("escape/secret.txt", "a/deeper/secret.txt",
                                  "a/inside/file.txt", "a/file.txt")]  # fmt: skip

    assert verdicts() == [None, None, b"in a", b"in a"]
    real_readlink = os.readlink

    def no_proc(path: Any, *args: Any, **kwargs: Any) -> str:
        if str(path).startswith("/proc/"):
            raise FileNotFoundError(path)
        return real_readlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "readlink", no_proc)
    assert verdicts() == [None, None, b"in a", b"in a"]
