"""Key validation, ETag caching and atomic publishing."""

from __future__ import annotations

import hashlib
import os

import pytest
import pytest_twisted

from edge.store.folder.etags import ETagCache
from edge.store.folder.objects import ContentTypes
from edge.store.folder.store import FolderStore as ObjectStore
from edge.store.keys import MAX_KEY_BYTES, InvalidKey, validate_key
from edge.testing.deferreds import fired


@pytest.mark.parametrize(
    "key",
    [
        "",
        ".",
        "..",
        "a/..",
        "../a",
        "a/./b",
        "a//b",
        "/a",
        "a\0b",
        "a\\b",
        "x" * 256,
        "a/" + "y" * (MAX_KEY_BYTES),
    ],
)
def test_bad_keys(key):
    """Keys that could leave the bucket folder or name no file are refused."""
    with pytest.raises(InvalidKey):
        validate_key(key)


@pytest.mark.parametrize("key", ["a", "a/b/c.txt", "..a", "a..", ".hidden", "a/.b", "dir/", "图片"])
def test_good_keys(key):
    """Dots inside names, hidden files and unicode are fine."""
    assert validate_key(key) == key


@pytest.fixture
def store(tmp_path):
    s = ObjectStore(tmp_path / "data", ["b-1"])
    s.prepare()
    return s


@pytest_twisted.ensureDeferred
async def test_publish_is_atomic_and_never_overwrites(store):
    """A pending object is invisible until published; publishing over an existing
    object keeps the existing one and removes the temp file."""
    pending = store.new_upload("b-1", "x/y.txt")
    pending.write(b"hello ")
    pending.write(b"world")
    assert not fired(store.exists("b-1", "x/y.txt"))
    assert await pending.publish() is True
    path = store.path_for("b-1", "x/y.txt")
    assert open(path, "rb").read() == b"hello world"
    assert os.listdir(store.tmp_dir) == []
    second = store.new_upload("b-1", "x/y.txt")
    second.write(b"other")
    assert await second.publish() is False
    assert open(path, "rb").read() == b"hello world"
    assert os.listdir(store.tmp_dir) == []


@pytest_twisted.ensureDeferred
async def test_published_etag_is_cached(store):
    """A copy's MD5, computed while writing, is the object's ETag without rereading."""
    pending = store.new_upload("b-1", "k")
    pending.write(b"data")
    await pending.publish()
    obj = fired(store.open_object("b-1", "k"))
    assert store.etags.get(obj.identity) == hashlib.md5(b"data").hexdigest()
    obj.file.close()


def test_discard_removes_temp(store):
    """Discarding leaves nothing behind, and is safe twice."""
    pending = store.new_upload("b-1", "k")
    pending.write(b"partial")
    pending.discard()
    pending.discard()
    assert os.listdir(store.tmp_dir) == []
    assert not fired(store.exists("b-1", "k"))


def test_prepare_sweeps_stale_temp_files(tmp_path):
    """Leftovers of an interrupted copy are removed at start-up, objects are not."""
    s = ObjectStore(tmp_path / "data", ["b-1"])
    s.prepare()
    (s.tmp_dir / "x.part").write_bytes(b"half")
    (tmp_path / "data" / "b-1" / "obj").write_bytes(b"whole")
    assert s.prepare() == 1
    assert os.listdir(s.tmp_dir) == []
    assert (tmp_path / "data" / "b-1" / "obj").read_bytes() == b"whole"


def test_open_object_misses(store, tmp_path):
    """Folders, absent files and paths through a file are misses, not errors."""
    os.makedirs(store.path_for("b-1", "dir"))
    open(store.path_for("b-1", "file"), "wb").close()
    assert fired(store.open_object("b-1", "dir")) is None
    assert fired(store.open_object("b-1", "absent")) is None
    assert fired(store.open_object("b-1", "file/child")) is None


def test_etag_cache_is_bounded():
    """The ETag cache forgets the least recently used entries past its capacity."""
    cache = ETagCache(capacity=2)
    cache.put((1, 1, 1, 1, 1), "a")
    cache.put((2, 2, 2, 2, 2), "b")
    cache.get((1, 1, 1, 1, 1))
    cache.put((3, 3, 3, 3, 3), "c")
    assert cache.get((2, 2, 2, 2, 2)) is None
    assert cache.get((1, 1, 1, 1, 1)) == "a"


def test_content_types(store):
    """Content-Type comes from the extension, octet-stream otherwise."""
    assert ContentTypes().for_key("a/b.html") == "text/html"
    assert ContentTypes().for_key("x.tar.gz") == "application/octet-stream"
    assert ContentTypes().for_key("noext") == "application/octet-stream"
    assert ContentTypes().for_key("P.JPG") == "image/jpeg"


def test_removing_a_bucket_never_removes_what_is_in_it(tmp_path):
    """DELETE Bucket removes only empty folders: a file that arrived after the emptiness
    check, or a link, stops it with BucketNotEmpty and stays (a recursive delete used to
    take them); an empty tree of folders goes."""
    from edge.store.interface import BucketNotEmpty

    store = ObjectStore(tmp_path / "data", ["b-1"])
    store.prepare()
    bucket = tmp_path / "data" / "b-1"
    (bucket / "a" / "b").mkdir(parents=True)
    (bucket / "a" / "b" / "late.txt").write_bytes(b"arrived late")
    with pytest.raises(BucketNotEmpty):
        fired(store.remove_bucket("b-1"))
    assert (bucket / "a" / "b" / "late.txt").read_bytes() == b"arrived late"
    (bucket / "a" / "b" / "late.txt").unlink()
    outside = tmp_path / "outside"
    outside.mkdir()
    (bucket / "link").symlink_to(outside)
    with pytest.raises(BucketNotEmpty):
        fired(store.remove_bucket("b-1"))
    assert outside.is_dir() and store.has_bucket("b-1")
    (bucket / "link").unlink()
    fired(store.remove_bucket("b-1"))
    assert not bucket.exists() and not store.has_bucket("b-1")


def test_metadata_is_recorded_against_the_file_its_put_published(tmp_path):
    """Two PUTs racing: the first's metadata, saved after the second replaced the file,
    names the first file's identity, so it is not served with the second's bytes (a
    re-stat used to attach it to whatever file was there)."""
    from edge.store.interface import ObjectMeta

    store = ObjectStore(tmp_path / "data", ["b-1"])
    store.prepare()
    path = tmp_path / "data" / "b-1" / "k.txt"
    path.write_bytes(b"first")
    first = os.stat(path)
    first_identity = (
        first.st_dev,
        first.st_ino,
        first.st_size,
        first.st_mtime_ns,
        first.st_ctime_ns,
    )
    path.unlink()
    path.write_bytes(b"second, another inode")
    store.meta.write("b-1", "k.txt", ObjectMeta("text/html"), first_identity)
    obj = fired(store.open_object("b-1", "k.txt"))
    assert obj is not None
    try:
        assert store.meta.read("b-1", "k.txt", obj.identity) is None
    finally:
        obj.file.close()


def test_another_process_first_upload_metadata_reaches_this_one(tmp_path):
    """With workers, a bucket's first PUT with a Content-Type in one process reaches the
    other's hits once its state timer refreshes (each process used to learn which buckets
    have metadata only at start-up)."""
    from edge.store.interface import ObjectMeta

    one = ObjectStore(tmp_path / "data", ["b-1"])
    one.prepare()
    two = ObjectStore(tmp_path / "data", ["b-1"])
    two.prepare(sweep=False)
    (tmp_path / "data" / "b-1" / "k.txt").write_bytes(b"x")
    one.meta.write("b-1", "k.txt", ObjectMeta("text/x-custom"))
    obj = fired(two.open_object("b-1", "k.txt"))
    assert obj is not None
    try:
        assert two.meta.read("b-1", "k.txt", obj.identity) is None  # not known yet
        two.refresh_meta_buckets()
        meta = two.meta.read("b-1", "k.txt", obj.identity)
        assert meta is not None and meta.content_type == "text/x-custom"
    finally:
        obj.file.close()


def test_metadata_records_kept_in_memory_follow_every_rewrite(tmp_path):
    """Hits keep parsed metadata records in memory, yet another process's rewrite of a
    record (same file, new headers), its removal, and a hand-edited unreadable record are
    seen by the next read, as if every read went to the file."""
    from edge.store.folder.layout import identity_of
    from edge.store.folder.meta import MetaRecords
    from edge.store.interface import ObjectMeta

    store = ObjectStore(tmp_path / "data", ["b-1"])
    store.prepare()
    obj = tmp_path / "data" / "b-1" / "k.txt"
    obj.write_bytes(b"bytes")
    identity = identity_of(os.stat(obj))
    writer, reader = MetaRecords(store.layout), MetaRecords(store.layout)  # two processes
    writer.write("b-1", "k.txt", ObjectMeta("text/plain", {"x-cos-meta-a": "1"}), identity)
    reader.refresh()
    assert reader.read("b-1", "k.txt", identity) == ObjectMeta("text/plain", {"x-cos-meta-a": "1"})
    assert reader.read("b-1", "k.txt", identity) == ObjectMeta("text/plain", {"x-cos-meta-a": "1"})
    writer.write("b-1", "k.txt", ObjectMeta("text/html", {"x-cos-meta-a": "2"}), identity)
    assert reader.read("b-1", "k.txt", identity) == ObjectMeta("text/html", {"x-cos-meta-a": "2"})
    other = (identity[0], identity[1] + 1, *identity[2:])
    assert reader.read("b-1", "k.txt", other) is None  # the record names another file
    record = tmp_path / reader._paths[("b-1", "k.txt")]
    record.write_text("[not a record")
    assert reader.read("b-1", "k.txt", identity) is None
    writer.clear("b-1", "k.txt")
    assert reader.read("b-1", "k.txt", identity) is None


@pytest_twisted.ensureDeferred
async def test_a_published_copy_keeps_its_md5_in_its_record_for_every_later_process(
    tmp_path, monkeypatch
):
    """The MD5 a copy was published with is saved in its metadata record, so a process that
    never saw the copy (a restart, another worker) answers its ETag without reading the file;
    a file replaced by hand since is hashed again (its record names another file)."""
    import edge.store.folder.etags as etags_module
    from edge.store.interface import ObjectMeta, OriginProvenance

    body = os.urandom(3 * 1024 * 1024)  # above the inline hashing limit
    first = ObjectStore(tmp_path / "data", ["b-1"])
    first.prepare()
    pending = first.new_upload("b-1", "dir/copied.bin")
    pending.write(body)
    origin = OriginProvenance('"o-etag"', "Tue, 01 Dec 2026 00:00:00 GMT", "image/png")
    assert await pending.publish(meta=ObjectMeta("", {}, origin)) is True

    later = ObjectStore(tmp_path / "data", ["b-1"])  # a fresh process: nothing cached
    later.prepare()

    def no_hashing(fd: int) -> str:
        raise AssertionError("the file was hashed")

    monkeypatch.setattr(etags_module, "hash_fd", no_hashing)
    obj = fired(later.open_object("b-1", "dir/copied.bin"))
    assert obj is not None
    assert fired(obj.etag()) == hashlib.md5(body).hexdigest()
    obj.close()

    monkeypatch.undo()
    path = tmp_path / "data" / "b-1" / "dir" / "copied.bin"
    path.write_bytes(b"replaced by hand")
    again = ObjectStore(tmp_path / "data", ["b-1"])
    again.prepare()
    obj = fired(again.open_object("b-1", "dir/copied.bin"))
    assert obj is not None
    assert fired(obj.etag()) == hashlib.md5(b"replaced by hand").hexdigest()
    obj.close()
