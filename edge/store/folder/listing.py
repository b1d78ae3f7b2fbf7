"""Listing a bucket folder: its keys, and the size, time and ETag of each.

The walk goes folder by folder through O_NOFOLLOW descriptors, skips symbolic links and
never enters the state folder, so a listing shows exactly what the edge itself holds and
nothing outside the bucket, whatever links an operator (or anyone) puts in it.
"""

from __future__ import annotations

import os
import stat as statmod
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.threads import deferToThread

from edge.store.folder import etags
from edge.store.folder.etags import INLINE_HASH_LIMIT, ETagHasher
from edge.store.folder.layout import DIR_FLAGS, FolderLayout, identity_of, walk
from edge.store.folder.objects import FolderObject
from edge.store.interface import ListedObject, ListingPage
from edge.store.keys import UnsafePath


class FolderListing:
    """Keys and their descriptions, for GET Bucket and the emptiness check of DELETE Bucket."""

    def __init__(
        self,
        layout: FolderLayout,
        hasher: ETagHasher,
        open_object: Callable[[str, str], FolderObject | None],
    ) -> None:
        self._layout = layout
        self._hasher = hasher
        self._open = open_object

    def iter_keys(self, bucket: str, prefix: str = "") -> Iterator[str]:
        """Keys of the regular files under the bucket folder whose key starts with `prefix`,
        in no particular order. Symbolic links are skipped: listing shows what the edge
        itself holds.

        The walk goes folder by folder through descriptors opened with O_NOFOLLOW, the
        prefix's folders included, so no link (even one swapped in meanwhile) takes it out
        of the bucket, and the state folder is never listed even if the layout puts it
        inside a bucket. `prefix` must have passed `validate_prefix`.
        """
        folder = prefix.rpartition("/")[0]
        try:
            with self._layout.bucket_fd(bucket) as root_fd:
                fds = walk(root_fd, folder.split("/") if folder else [], False, "prefix")
                start = fds.pop() if fds else os.dup(root_fd)
                for fd in fds:
                    os.close(fd)
        except (OSError, UnsafePath):
            return
        try:
            yield from self._keys_below(start, folder + "/" if folder else "", prefix)
        finally:
            os.close(start)

    def _keys_below(self, fd: int, base: str, prefix: str) -> Iterator[str]:
        """Depth first, one descriptor per level: a folder of many folders never holds
        more than the depth's worth of descriptors open."""
        st = os.fstat(fd)
        if (
            self._layout.state_identity is not None
            and (st.st_dev, st.st_ino) == self._layout.state_identity
        ):
            return
        try:
            with os.scandir(fd) as it:
                entries = list(it)
        except OSError:
            return
        for entry in entries:
            key = base + entry.name
            if entry.is_dir(follow_symlinks=False):
                if (key + "/").startswith(prefix) or prefix.startswith(key + "/"):
                    try:
                        sub = os.open(entry.name, DIR_FLAGS, dir_fd=fd)
                    except OSError:
                        continue  # removed, or swapped for a link, since it was listed
                    try:
                        yield from self._keys_below(sub, key + "/", prefix)
                    finally:
                        os.close(sub)
            elif entry.is_file(follow_symlinks=False) and key.startswith(prefix):
                yield key

    def describe(
        self, bucket: str, keys: Sequence[str]
    ) -> Deferred[list[tuple[str, int, float, str]]]:
        """(key, size, mtime, ETag) of each listed key that is still a regular file.

        One trip to a thread for the whole page: opening, stating and hashing up to a
        thousand small files there instead of one by one on the reactor. Large files not
        hashed yet go through `etag` (single flight, hashing pool). Opened like writes,
        without following links: listing shows only what lies inside the bucket.
        """

        def collect() -> tuple[list[list[Any]], list[tuple[Any, str]]]:
            rows: list[list[Any]] = []
            learned: list[tuple[Any, str]] = []
            for key in keys:
                try:
                    with self._layout.bucket_parent(bucket, key, create=False) as (parent, name):
                        fd = os.open(
                            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent
                        )
                except (OSError, UnsafePath):
                    continue  # deleted (or swapped for a link) since it was listed
                try:
                    st = os.fstat(fd)
                    if not statmod.S_ISREG(st.st_mode):
                        continue
                    identity = identity_of(st)
                    etag = self._hasher.cache.peek(identity)
                    if etag is None and st.st_size <= INLINE_HASH_LIMIT:
                        etag = etags.hash_fd(fd)  # through the module: tests count the hashing
                        learned.append((identity, etag))
                    rows.append([key, st.st_size, st.st_mtime, etag])
                finally:
                    os.close(fd)
            return rows, learned

        async def fill(row: list[Any], obj: FolderObject) -> None:
            try:
                row[3] = await obj.etag()  # recorded at publish, or hashed once
            finally:
                obj.file.close()

        async def run() -> list[tuple[str, int, float, str]]:
            rows, learned = await deferToThread(collect)
            for identity, etag in learned:
                self._hasher.cache.put(identity, etag)
            large = [row for row in rows if row[3] is None]
            hashes: list[Deferred[None]] = []
            for row in large:
                obj = self._open(bucket, row[0])
                if obj is None:
                    row[0] = None  # deleted meanwhile
                    continue
                hashes.append(Deferred.fromCoroutine(fill(row, obj)))
            if hashes:
                await gatherResults(hashes, consumeErrors=True)
            return [(r[0], r[1], r[2], r[3]) for r in rows if r[0] is not None]

        return Deferred.fromCoroutine(run())

    def list_page(
        self, bucket: str, prefix: str, marker: str, delimiter: str, max_keys: int
    ) -> Deferred[ListingPage]:
        """One page of GET Bucket. The walk and the sort go to a thread (a big bucket must
        not hold other requests); the page's files are then described in one more trip."""

        async def run() -> ListingPage:
            keys = await deferToThread(lambda: sorted(self.iter_keys(bucket, prefix)))
            page = _page(keys, prefix, delimiter, marker, max_keys)
            entries = await self.describe(bucket, page.contents)
            return ListingPage(
                contents=[ListedObject(*entry) for entry in entries],
                common_prefixes=page.prefixes,
                truncated=page.truncated,
                next_marker=page.last if page.truncated else None,
            )

        return Deferred.fromCoroutine(run())


class _Page:
    """One page of a listing: the keys shown, the common prefixes rolled up by the
    delimiter, and whether (and after what) the listing goes on."""

    def __init__(self) -> None:
        self.contents: list[str] = []
        self.prefixes: list[str] = []
        self.truncated = False
        self.last = ""


def _page(keys: list[str], prefix: str, delimiter: str, marker: str, max_keys: int) -> _Page:
    """The page of sorted `keys` after `marker`; a common prefix counts as one entry."""
    page = _Page()
    seen_prefixes: set[str] = set()
    for key in keys:
        if key <= marker:
            continue
        common = None
        if delimiter:
            cut = key.find(delimiter, len(prefix))
            if cut >= 0:
                common = key[: cut + len(delimiter)]
        if common is not None and common in seen_prefixes:
            continue
        if common is not None and common <= marker:
            continue
        if len(page.contents) + len(page.prefixes) >= max_keys:
            page.truncated = True
            break
        if common is not None:
            seen_prefixes.add(common)
            page.prefixes.append(common)
            page.last = common
        else:
            page.contents.append(key)
            page.last = key
    return page
