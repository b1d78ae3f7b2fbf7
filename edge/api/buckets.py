"""The buckets the edge serves: those in the config file plus those made with PUT Bucket.

Each bucket created through the API is remembered as one file, `.cosedge/buckets/<name>`,
made with `O_EXCL`: two processes creating different buckets at once can never lose one
(a shared list rewritten from a stale view would), and two creating the same bucket get one
winner. Configured buckets cannot be deleted through the API, since the next start would
bring them back. The `buckets.json` list of older releases is taken over on first load.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from edge.config import BUCKET_NAME_RE, BucketConfig
from edge.store.changestamp import ChangeStamp
from edge.store.interface import SharedWrites
from edge.store.statefiles import fsync_dir

# SPEC §7: `<bucket>.<anything>.myqcloud.com`, as the COS SDKs send when given an IP.
_API_HOST = re.compile(r"^(?P<bucket>[a-z0-9-]+-\d+)\.(?:[a-z0-9-]+\.)+myqcloud\.com$")


class BucketExists(Exception):
    """Another process created the bucket first."""


def marker_record() -> bytes:
    """What a bucket's marker holds: when it was made (read by nobody yet; for operators)."""
    return json.dumps({"created": time.time()}).encode()


class BucketRegistry:
    def __init__(
        self,
        configured: Mapping[str, BucketConfig],
        state_dir: Path,
        on_change: Callable[[set[str], set[str]], None] | None = None,
    ) -> None:
        self._configured = dict(configured)
        self._buckets = dict(configured)
        self._by_domain = {d: b for b in configured.values() for d in b.domains}
        self._folder = Path(state_dir) / "buckets"
        self._legacy = Path(state_dir) / "buckets.json"
        self._on_change = on_change
        self._stamp = ChangeStamp(Path(state_dir) / "buckets.stamp")
        # A cluster's state bucket (SPEC §8), written before the marker; None on one node.
        self.shared: SharedWrites | None = None

    @property
    def folder(self) -> Path:
        return self._folder

    @property
    def stamp_path(self) -> Path:
        return self._stamp.path

    def load(self) -> list[str]:
        """Take in the buckets created through the API (by any process); returns their
        names. `on_change` hears of buckets that appeared or went since the last load."""
        self._stamp.mark_seen()
        self._adopt_legacy_list()
        try:
            names = sorted(os.listdir(self._folder))
        except FileNotFoundError:
            names = []
        except OSError as e:
            raise ValueError(f"{self._folder}: unreadable bucket folder: {e.strerror}") from None
        created = [n for n in names if BUCKET_NAME_RE.fullmatch(n)]
        before = set(self._buckets)
        previous = self._buckets
        self._buckets = dict(self._configured)
        for name in created:
            self._buckets.setdefault(name, previous.get(name) or BucketConfig(name=name))
        after = set(self._buckets)
        if self._on_change is not None and before != after:
            self._on_change(after - before, before - after)
        return created

    def reconfigure(self, configured: Mapping[str, BucketConfig]) -> None:
        """The config file's buckets after a reload: new ones are served, removed ones
        are no longer (their folders stay), domains follow; API-made buckets stay."""
        previous = self._configured, self._by_domain
        self._configured = dict(configured)
        self._by_domain = {d: b for b in configured.values() for d in b.domains}
        try:
            self.load()
        except Exception:
            self._configured, self._by_domain = previous  # the reload is refused whole
            raise

    def _adopt_legacy_list(self) -> None:
        """Move an older release's `buckets.json` into one file per bucket."""
        try:
            raw = json.loads(self._legacy.read_text(encoding="utf-8"))
            names = raw["created"]
            if not isinstance(names, list):
                raise TypeError("'created' is not a list")
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{self._legacy}: unreadable bucket list: {e}") from None
        for name in names:
            if isinstance(name, str) and BUCKET_NAME_RE.fullmatch(name):
                try:
                    self._write_marker(name)
                except BucketExists:
                    pass
        self._legacy.unlink()

    def refresh(self) -> None:
        """Reload when another process created or deleted a bucket (called on a timer)."""
        self._stamp.reload_if_changed(self.load, ValueError)

    def __contains__(self, name: object) -> bool:
        return name in self._buckets

    def get(self, name: str) -> BucketConfig | None:
        return self._buckets.get(name)

    def names(self) -> list[str]:
        return sorted(self._buckets)

    def by_domain(self, host: str) -> BucketConfig | None:
        return self._by_domain.get(host)

    @staticmethod
    def name_from_api_host(host: str) -> str | None:
        match = _API_HOST.fullmatch(host)
        return match.group("bucket") if match else None

    def knows_every_bucket(self) -> bool:
        """False on a cluster node that has not got the shared state yet (SPEC §8): a
        bucket it does not know may have been made on another node."""
        return self.shared is None or self.shared.has_copy

    def is_configured(self, name: str) -> bool:
        return name in self._configured

    def create(self, name: str) -> BucketConfig:
        """Remember a new bucket; `BucketExists` if any process made it first."""
        if name in self._buckets:
            raise BucketExists(name)
        self.write_marker(name)
        return self.adopt(name)

    def adopt(self, name: str) -> BucketConfig:
        """Serve a bucket whose marker `write_marker` made (the in-memory half of
        `create`, on the reactor thread; the marker's fsyncs may run in a thread)."""
        bucket = BucketConfig(name=name)
        self._buckets[name] = bucket
        self._stamp.touch()
        return bucket

    def delete(self, name: str) -> None:
        self.remove_marker(name)
        self.forget(name)

    def forget(self, name: str) -> None:
        """Stop serving a bucket whose marker is gone (the in-memory half of `delete`)."""
        self._buckets.pop(name, None)
        self._stamp.touch()

    def remove_marker(self, name: str) -> None:
        """Remove the bucket's marker durably (blocking: fsyncs the folder)."""
        try:
            os.unlink(self._folder / name)
        except FileNotFoundError:
            pass
        fsync_dir(self._folder)

    def write_marker(self, name: str, record: bytes | None = None) -> None:
        """The bucket's marker, made with O_EXCL and flushed with its folder (blocking);
        `BucketExists` if another process made it first."""
        self._write_marker(name, record)

    def _write_marker(self, name: str, record: bytes | None = None) -> None:
        self._folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self._folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise BucketExists(name) from None
        try:
            os.write(fd, marker_record() if record is None else record)
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self._folder)


def split_host(host: bytes | None) -> str:
    """Host header -> lowercase name without port; handles `[v6]:port` itself, since
    `twisted.web.vhost` splits those at the wrong colon."""
    if not host:
        return ""
    text = host.decode("latin-1").strip().lower()
    if text.startswith("["):
        end = text.find("]")
        return text[1:end] if end > 0 else text
    name = text.rsplit(":", 1)[0] if text.count(":") == 1 else text
    return name.rstrip(".")
