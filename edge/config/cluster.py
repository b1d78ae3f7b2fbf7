"""The `store:` and `coordination:` keys (SPEC §8): where buckets live, and the Redis that
lets several nodes share one S3 store.

Checked like every other key, before anything starts: an unknown key, a bad URL or a bucket
template that cannot name an S3 bucket stops start-up naming file, key and reason. S3 keys
may come from the environment (`COSEDGE_S3_ACCESS_KEY_ID`, `COSEDGE_S3_SECRET_ACCESS_KEY`)
so they need not sit in the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from edge.config.errors import ConfigError
from edge.config.redis_address import RedisAddress, parse_redis_url

ENV_ACCESS_KEY = "COSEDGE_S3_ACCESS_KEY_ID"
ENV_SECRET_KEY = "COSEDGE_S3_SECRET_ACCESS_KEY"
STORE_TYPES = ("files", "s3")
_STORE_KEYS = {
    "type",
    "endpoint",
    "region",
    "access_key_id",
    "secret_access_key",
    "bucket_template",
    "state_bucket",
}
_COORDINATION_KEYS = {"redis", "lock_ttl"}
# S3's bucket names: 3-63 lowercase letters, digits, '.' and '-', a letter or digit at
# each end (no IP-address look-alikes, no '..').
_S3_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SAMPLE_BUCKETS = ("a-1",)  # the shortest edge bucket; configured ones are checked too


@dataclass(frozen=True)
class StoreConfig:
    """`store:`: `files` (folders under `data_dir`, the default) or an S3 store."""

    kind: str = "files"
    endpoint: str = ""
    region: str = "us-east-1"
    access_key_id: str = field(default="", repr=False)
    secret_access_key: str = field(default="", repr=False)
    bucket_template: str = "{bucket}"
    state_bucket: str = "cosedge-state"

    def store_bucket(self, bucket: str) -> str:
        return self.bucket_template.format(bucket=bucket)


@dataclass(frozen=True)
class CoordinationConfig:
    """`coordination:`: the Redis shared by every node, and how long a dead node's copy
    lock outlives it."""

    redis: RedisAddress
    lock_ttl: float = 30.0


def s3_bucket_problem(name: str) -> str | None:
    """Why `name` cannot be an S3 bucket, or None."""
    if not _S3_BUCKET_RE.fullmatch(name) or ".." in name or ".-" in name or "-." in name:
        return f"{name!r} is not a valid S3 bucket name (3-63 of a-z, 0-9, '.', '-')"
    if re.fullmatch(r"[0-9.]+", name):
        return f"{name!r} looks like an IP address, which S3 refuses as a bucket name"
    return None


def check_store(value: object, source: str, env: Mapping[str, str] | None = None) -> StoreConfig:
    if value is None:
        return StoreConfig()
    if not isinstance(value, Mapping):
        raise ConfigError(source, "store", "must be a mapping (type, endpoint, ...)")
    _no_unknown(value, _STORE_KEYS, "store.", source)
    kind = value.get("type", "files")
    if kind not in STORE_TYPES:
        raise ConfigError(source, "store.type", f"must be one of {', '.join(STORE_TYPES)}")
    if kind == "files":
        extra = sorted(k for k in value if k != "type")
        if extra:
            raise ConfigError(source, f"store.{extra[0]}", "only applies to store type s3")
        return StoreConfig()
    env = os.environ if env is None else env
    endpoint = _string(value, "endpoint", source, required=True)
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(source, "store.endpoint", "must be an http(s)://host[:port] URL")
    try:
        _ = parts.port
    except ValueError:
        raise ConfigError(source, "store.endpoint", "has a bad port") from None
    if parts.query or parts.fragment or parts.username is not None:
        raise ConfigError(source, "store.endpoint", "must not have user info, ?query or #")
    keys = {}
    for name, variable in (
        ("access_key_id", ENV_ACCESS_KEY),
        ("secret_access_key", ENV_SECRET_KEY),
    ):
        keys[name] = _string(value, name, source) or env.get(variable, "")
        if not keys[name]:
            raise ConfigError(source, f"store.{name}", f"is required (or set {variable})")
    template = _string(value, "bucket_template", source) or "{bucket}"
    _check_template(template, source)
    state_bucket = _string(value, "state_bucket", source) or "cosedge-state"
    problem = s3_bucket_problem(state_bucket)
    if problem is not None:
        raise ConfigError(source, "store.state_bucket", problem)
    return StoreConfig(
        kind="s3",
        endpoint=endpoint.rstrip("/"),
        region=_string(value, "region", source) or "us-east-1",
        bucket_template=template,
        state_bucket=state_bucket,
        **keys,
    )


def _check_template(template: str, source: str) -> None:
    key = "store.bucket_template"
    if "{bucket}" not in template:
        raise ConfigError(source, key, "must contain {bucket}")
    for sample in _SAMPLE_BUCKETS:
        try:
            name = template.format(bucket=sample)
        except (KeyError, IndexError, ValueError) as e:
            raise ConfigError(source, key, f"only {{bucket}} may be in braces ({e})") from None
        problem = s3_bucket_problem(name)
        if problem is not None:
            raise ConfigError(source, key, f"for bucket {sample}: {problem}")


def check_coordination(value: object, source: str) -> CoordinationConfig | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(source, "coordination", "must be a mapping (redis, lock_ttl)")
    _no_unknown(value, _COORDINATION_KEYS, "coordination.", source)
    url = _string(value, "redis", source, required=True, prefix="coordination.")
    try:
        address = parse_redis_url(url)
    except ValueError as e:
        raise ConfigError(source, "coordination.redis", str(e)) from None
    ttl = value.get("lock_ttl", 30)
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= 86400:
        raise ConfigError(
            source, "coordination.lock_ttl", f"must be a number of seconds > 0, not {ttl!r}"
        )
    return CoordinationConfig(redis=address, lock_ttl=float(ttl))


def check_together(
    store: StoreConfig | None,
    coordination: CoordinationConfig | None,
    buckets: Mapping[str, object],
    source: str,
) -> None:
    """An S3 store is shared by nodes that must agree on one origin fetch per key: that
    needs the Redis of `coordination:`. And every configured bucket must have a store
    bucket the template can name."""
    if store is None or store.kind != "s3":
        return
    for bucket in buckets:
        problem = s3_bucket_problem(store.store_bucket(bucket))
        if problem is not None:
            raise ConfigError(source, "store.bucket_template", f"for bucket {bucket}: {problem}")
    if coordination is None:
        raise ConfigError(
            source,
            "coordination",
            "is required with store type s3: the nodes sharing the store take their copy "
            "locks there, so each key is fetched from the origin once (coordination.redis)",
        )


def _string(
    raw: Mapping[str, object],
    name: str,
    source: str,
    required: bool = False,
    prefix: str = "store.",
) -> str:
    item = raw.get(name)
    if item is None:
        if required:
            raise ConfigError(source, prefix + name, "is required")
        return ""
    if not isinstance(item, str) or not item or item != item.strip():
        raise ConfigError(source, prefix + name, "must be a non-empty string without spaces")
    return item


def _no_unknown(raw: Mapping[object, object], allowed: set[str], prefix: str, source: str) -> None:
    for key in raw:
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            raise ConfigError(source, f"{prefix}{key}", f"unknown key (known: {known})")
