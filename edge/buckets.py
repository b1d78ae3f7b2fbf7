"""The buckets the edge serves: those in the config file plus those made with PUT Bucket.

Buckets created through the API are remembered in `.cosedge/buckets.json` (written
atomically) so they survive a restart; configured buckets cannot be deleted through the API,
since the next start would bring them back.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from edge.changestamp import ChangeStamp
from edge.config import BUCKET_NAME_RE, BucketConfig

# SPEC §7: `<bucket>.<anything>.myqcloud.com`, as the COS SDKs send when given an IP.
_API_HOST = re.compile(r"^(?P<bucket>[a-z0-9-]+-\d+)\.(?:[a-z0-9-]+\.)+myqcloud\.com$")


class BucketRegistry:
    # With worker processes, a bucket made or deleted through one process reaches the
    # others when they notice `buckets.json` changed; they look at most this often.
    refresh_interval = 1.0

    def __init__(
        self,
        configured: Mapping[str, BucketConfig],
        state_dir: Path,
        on_change: Callable[[set[str], set[str]], None] | None = None,
    ) -> None:
        self._configured = dict(configured)
        self._buckets = dict(configured)
        self._by_domain = {d: b for b in configured.values() for d in b.domains}
        self._path = Path(state_dir) / "buckets.json"
        self._on_change = on_change
        self._stamp = ChangeStamp(self._path.with_name("buckets.stamp"), self.refresh_interval)

    def load(self) -> list[str]:
        """Take in the buckets created through the API (by any process); returns their
        names. `on_change` hears of buckets that appeared or went since the last load."""
        self._stamp.mark_seen()
        try:
            names = json.loads(self._path.read_text(encoding="utf-8"))["created"]
        except FileNotFoundError:
            names = []
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{self._path}: unreadable bucket list: {e}") from None
        created = [n for n in names if isinstance(n, str) and BUCKET_NAME_RE.fullmatch(n)]
        before = set(self._buckets)
        self._buckets = dict(self._configured)
        for name in created:
            self._buckets.setdefault(name, BucketConfig(name=name))
        after = set(self._buckets)
        if self._on_change is not None and before != after:
            self._on_change(after - before, before - after)
        return created

    def _maybe_refresh(self) -> None:
        self._stamp.reload_if_changed(self.load, ValueError, self.refresh_interval)

    def __contains__(self, name: object) -> bool:
        self._maybe_refresh()
        return name in self._buckets

    def get(self, name: str) -> BucketConfig | None:
        self._maybe_refresh()
        return self._buckets.get(name)

    def names(self) -> list[str]:
        self._maybe_refresh()
        return sorted(self._buckets)

    def by_domain(self, host: str) -> BucketConfig | None:
        return self._by_domain.get(host)

    @staticmethod
    def name_from_api_host(host: str) -> str | None:
        match = _API_HOST.fullmatch(host)
        return match.group("bucket") if match else None

    def is_configured(self, name: str) -> bool:
        return name in self._configured

    def create(self, name: str) -> BucketConfig:
        bucket = BucketConfig(name=name)
        self._buckets[name] = bucket
        self._save()
        return bucket

    def delete(self, name: str) -> None:
        del self._buckets[name]
        self._save()

    def _save(self) -> None:
        created = sorted(n for n in self._buckets if n not in self._configured)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        temp = self._path.with_name(f".buckets.{uuid.uuid4().hex}.tmp")
        with open(temp, "w", encoding="utf-8") as f:
            json.dump({"created": created}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, self._path)
        self._stamp.touch()
