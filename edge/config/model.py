"""The validated config: immutable values the rest of the edge reads (SPEC §2)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from edge.config.addresses import OriginAddress
from edge.config.cluster import CoordinationConfig, StoreConfig
from edge.config.errors import ConfigError

DEFAULT_LISTEN = "tcp:8080:interface=127.0.0.1"
DEFAULT_DATA_DIR = "./cosedge-data"

BUCKET_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?-[0-9]+$")


@dataclass(frozen=True)
class OriginConfig:
    enabled: bool
    address: OriginAddress


@dataclass(frozen=True)
class BucketConfig:
    name: str
    domains: tuple[str, ...] = ()
    origin: OriginConfig | None = None

    @property
    def active_origin(self) -> OriginAddress | None:
        """The origin a miss goes to, or None when back-to-origin is off for this bucket."""
        if self.origin is None or not self.origin.enabled:
            return None
        return self.origin.address


@dataclass(frozen=True)
class BreakerConfig:
    """`origin_fetch.breaker`: `failures` origin faults (connection errors, timeouts, 5xx)
    within `window` seconds open an origin's breaker for `open` seconds."""

    failures: int = 5
    window: float = 30.0
    open: float = 30.0


@dataclass(frozen=True)
class OriginFetchConfig:
    """Limits on origin copies: each one bounds a resource a misbehaving origin could eat."""

    concurrency: int = 8
    queue_size: int = 1000
    connect_timeout: float = 10.0
    idle_timeout: float = 30.0
    total_timeout: float = 3600.0
    max_object_size: int = 5 * 1024**3
    dns_cache_ttl: float = 60.0
    # How long a domain origin's resolution may take: a miss waits at most this long for
    # an uncached name, then answers 404 NoSuchKey, so a hung resolver never holds misses.
    dns_timeout: float = 3.0
    shutdown_grace: float = 5.0
    retry_after: float = 10.0
    # Origin protection (SPEC §12): a cap per origin host under `concurrency`, how long an
    # origin 404 stands for its key, and the per-host circuit breaker.
    per_origin_concurrency: int = 4
    not_found_ttl: float = 300.0
    breaker: BreakerConfig = BreakerConfig()
    # HTTPS origins (SPEC §11): a PEM bundle of the CAs their certificates must chain to;
    # None trusts the system's store.
    ca_file: Path | None = None
    # A copy whose origin sends Content-MD5 / Digest / Repr-Digest checks the body against
    # it and stores nothing on a mismatch (OSS's MirrorCheckMd5); off only for an origin
    # known to send wrong ones.
    check_digests: bool = True


@dataclass(frozen=True)
class LimitsConfig:
    """Limits on what clients can make the edge hold at once.

    `spool_bytes`: request bodies being written to the store's temp folder at once, across
    all requests; an upload beyond it is answered 503 SlowDown instead of filling the disk.
    """

    spool_bytes: int = 10 * 1024**3
    # A multipart upload neither completed nor aborted this long after it began is removed
    # with its parts (S3/COS lifecycle's AbortIncompleteMultipartUpload; 7 days).
    abort_incomplete_uploads_after: float = 7 * 24 * 3600.0


@dataclass(frozen=True)
class Credential:
    """A key pair for the signed management API, and the buckets it may manage."""

    secret_id: str
    secret_key: str
    buckets: tuple[str, ...] = ("*",)

    def allows(self, bucket: str) -> bool:
        return "*" in self.buckets or bucket in self.buckets


@dataclass(frozen=True)
class AccessLogConfig:
    """`access_log`: a file of its own (`path`), or off (`path` None). Unset, the access
    lines stay events in the twistd log (`EdgeConfig.access_log` is None)."""

    path: Path | None
    format: str = "combined"  # or "json": one object per line, the same fields
    buffer: int = 64 * 1024  # bytes buffered before a write
    flush: float = 1.0  # seconds a buffered line waits at most


@dataclass(frozen=True)
class EdgeConfig:
    source: str = "<defaults>"
    listen: str = DEFAULT_LISTEN
    # The admin port (SPEC §9): /metrics, /console/ and the signed API; None: off.
    admin_listen: str | None = None
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    isp_ranges: Path | None = None
    extra_origin_cidrs: tuple[str, ...] = ()
    buckets: Mapping[str, BucketConfig] = field(default_factory=lambda: MappingProxyType({}))
    origin_fetch: OriginFetchConfig = OriginFetchConfig()
    limits: LimitsConfig = LimitsConfig()
    credentials: tuple[Credential, ...] = ()
    workers: int = 1
    log_level: str = "info"
    access_log: AccessLogConfig | None = None
    store: StoreConfig = StoreConfig()
    coordination: CoordinationConfig | None = None

    def error(self, key: str, reason: str) -> ConfigError:
        return ConfigError(self.source, key, reason)
