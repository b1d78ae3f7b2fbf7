"""The YAML config of SPEC §2 turned into immutable, validated values.

Everything an operator can get wrong is caught here, before any listener or file exists, and
reported as one line naming the file, the key and the reason: a half-started edge that
silently ignores a typo is worse than one that refuses to start.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from netaddr import AddrFormatError, IPNetwork

DEFAULT_LISTEN = "tcp:8080:interface=127.0.0.1"
DEFAULT_DATA_DIR = "./cosedge-data"

BUCKET_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?-[0-9]+$")
_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_SIZE_RE = re.compile(r"^\s*([0-9]+)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


class ConfigError(Exception):
    """A config problem: `str()` is the one line an operator sees on start-up."""

    def __init__(self, source: str, key: str, reason: str) -> None:
        super().__init__(source, key, reason)
        self.source = source
        self.key = key
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.source}: {self.key}: {self.reason}"

    @property
    def problems(self) -> list[ConfigError]:
        """Every problem found; start-up names the first, `cosedge check-config` all."""
        return [self]

    def first_line(self) -> str:
        """The one line start-up prints: the first problem, and how many more there are."""
        more = len(self.problems) - 1
        first = str(self.problems[0])
        return first if not more else f"{first} (and {more} more: cosedge check-config)"


class ConfigProblems(ConfigError):
    """Several independent problems in one file, found in one pass."""

    def __init__(self, problems: Sequence[ConfigError]) -> None:
        first = problems[0]
        super().__init__(first.source, first.key, first.reason)
        self._problems = list(problems)

    @property
    def problems(self) -> list[ConfigError]:
        return list(self._problems)

    def __str__(self) -> str:
        return "\n".join(ConfigError.__str__(p) for p in self._problems)


def raise_problems(problems: Sequence[ConfigError]) -> None:
    """Raise what was collected: nothing, the one problem, or all of them."""
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise ConfigProblems(problems)


@dataclass(frozen=True)
class OriginAddress:
    """An origin as configured: a host (domain or IP literal) and an optional port.

    `netloc` is what goes into the 302 `Location` and the `Host` header of the copy, so both
    always name the origin exactly as the operator configured it.
    """

    host: str
    port: int | None = None
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if self.ip is not None and self.ip.version == 6 else self.host
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def connect_port(self) -> int:
        return 80 if self.port is None else self.port

    def __str__(self) -> str:
        return self.netloc

    @classmethod
    def parse(cls, text: object) -> OriginAddress:
        """Parse `host[:port]` / `[v6][:port]`; `ValueError` says what is wrong."""
        if not isinstance(text, str):
            raise ValueError(f"must be a string like 'example.com:8080', not {type(text).__name__}")
        if text == "":
            raise ValueError("is empty")
        if text != text.strip() or any(c.isspace() for c in text):
            raise ValueError(f"{text!r} contains spaces")
        if "://" in text:
            raise ValueError(
                f"{text!r} has a scheme; give host[:port] only (origins are plain HTTP)"
            )
        if "/" in text or "?" in text or "#" in text:
            raise ValueError(f"{text!r} has a path; give host[:port] only")
        if "@" in text:
            raise ValueError(f"{text!r} has user info; give host[:port] only")
        host, port_text = _split_host_port(text)
        port = _parse_port(port_text, text) if port_text is not None else None
        if host.startswith("["):
            literal = host[1:-1]
            if "%" in literal:
                raise ValueError(f"{text!r}: IPv6 zone ids are not allowed")
            try:
                v6 = ipaddress.IPv6Address(literal)
            except ValueError:
                raise ValueError(f"{text!r}: {literal!r} is not an IPv6 address") from None
            return cls(host=v6.compressed, port=port, ip=v6)
        if re.fullmatch(r"[0-9.]+", host):
            try:
                v4 = ipaddress.IPv4Address(host)
            except ValueError:
                raise ValueError(f"{text!r}: {host!r} is not a valid IPv4 address") from None
            return cls(host=str(v4), port=port, ip=v4)
        return cls(host=_check_domain(host, text), port=port)


def _split_host_port(text: str) -> tuple[str, str | None]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: '[' without ']'")
        rest = text[end + 1 :]
        if rest == "":
            return text[: end + 1], None
        if not rest.startswith(":"):
            raise ValueError(f"{text!r}: unexpected {rest!r} after ']'")
        return text[: end + 1], rest[1:]
    if text.count(":") > 1:
        raise ValueError(f"{text!r}: an IPv6 address must be in brackets, like [2001:db8::1]:8080")
    host, sep, port = text.partition(":")
    if not host:
        raise ValueError(f"{text!r} has no host")
    return host, (port if sep else None)


def _parse_port(port_text: str, text: str) -> int:
    if not port_text.isdigit() or not port_text.isascii():
        raise ValueError(f"{text!r}: port {port_text!r} is not a number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: port {port} is outside 1-65535")
    return port


def _check_domain(host: str, text: str) -> str:
    lowered = host.lower()
    if len(lowered) > 253:
        raise ValueError(f"{text!r}: host name longer than 253 characters")
    labels = lowered.split(".")
    for label in labels:
        if not _LABEL_RE.fullmatch(label):
            raise ValueError(f"{text!r}: {host!r} is not a valid host name")
    if labels[-1].isdigit():
        raise ValueError(f"{text!r}: {host!r} is not a valid host name")
    return lowered


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


_ACCESS_LOG_FORMATS = ("combined", "json")


@dataclass(frozen=True)
class EdgeConfig:
    source: str = "<defaults>"
    listen: str = DEFAULT_LISTEN
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

    def error(self, key: str, reason: str) -> ConfigError:
        return ConfigError(self.source, key, reason)


_TOP_KEYS = {
    "listen",
    "data_dir",
    "isp_ranges",
    "extra_origin_cidrs",
    "buckets",
    "origin_fetch",
    "limits",
    "credentials",
    "workers",
    "log_level",
    "access_log",
}
LOG_LEVELS = ("debug", "info", "warn", "error", "critical")
_CREDENTIAL_KEYS = {"secret_id", "secret_key", "buckets"}
_BUCKET_KEYS = {"domains", "origin"}
_ORIGIN_KEYS = {"enabled", "address"}
_FETCH_KEYS = {
    "concurrency": "int",
    "queue_size": "int",
    "connect_timeout": "seconds",
    "idle_timeout": "seconds",
    "total_timeout": "seconds",
    "max_object_size": "size",
    "dns_cache_ttl": "seconds",
    "dns_timeout": "seconds",
    "shutdown_grace": "seconds",
    "retry_after": "seconds",
}


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate keys, which PyYAML would silently overwrite."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


def load_config(
    path: Path | str | None,
    *,
    listen: str | None = None,
    data_dir: str | None = None,
    workers: str | None = None,
) -> EdgeConfig:
    """Read and validate a config file (or the embedded defaults when `path` is None).

    Command-line overrides win over the file, as with twistd's own options.
    """
    raw: Any = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(source, "(file)", f"cannot read: {e.strerror or e}") from None
        except UnicodeDecodeError:
            raise ConfigError(source, "(file)", "not UTF-8 text") from None
        try:
            raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark is not None else "(syntax)"
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(source, where, f"YAML error: {problem}") from None
        if raw is None:
            raw = {}
    config = parse_config(raw, source)
    overrides: dict[str, Any] = {}
    if listen is not None:
        overrides["listen"] = _check_listen(listen, "--listen", source)
    if data_dir is not None:
        overrides["data_dir"] = _check_path(data_dir, "--data-dir", source)
    if workers is not None:
        overrides["workers"] = check_workers(workers, "--workers", source)
    if overrides:
        config = _replace(config, **overrides)
    return config


def _replace(config: EdgeConfig, **changes: Any) -> EdgeConfig:
    from dataclasses import replace

    return replace(config, **changes)


def parse_config(raw: object, source: str) -> EdgeConfig:
    """Validate a parsed YAML document; every key is checked, unknown keys are errors."""
    if not isinstance(raw, Mapping):
        raise ConfigError(source, "(top level)", "must be a mapping of keys to values")
    problems: list[ConfigError] = []

    def checked(check: Callable[..., Any], *args: Any, default: Any = None) -> Any:
        # Each top-level key is judged on its own, so one pass reports every bad key.
        try:
            return check(*args)
        except ConfigError as e:
            problems.extend(e.problems)
            return default

    checked(_no_unknown_keys, raw, _TOP_KEYS, "", source)
    listen = checked(_check_listen, raw.get("listen", DEFAULT_LISTEN), "listen", source)
    data_dir = checked(_check_path, raw.get("data_dir", DEFAULT_DATA_DIR), "data_dir", source)
    isp_raw = raw.get("isp_ranges")
    isp_ranges = None if isp_raw is None else checked(_check_path, isp_raw, "isp_ranges", source)
    extra = checked(_check_cidrs, raw.get("extra_origin_cidrs", []), source, default=())
    buckets = checked(_check_buckets, raw.get("buckets", {}), source, default={})
    fetch = checked(_check_fetch, raw.get("origin_fetch", {}), source)
    limits = checked(_check_limits, raw.get("limits", {}), source)
    credentials = checked(_check_credentials, raw.get("credentials", []), source, default=())
    workers = checked(check_workers, raw.get("workers", 1), "workers", source)
    log_level = checked(_check_log_level, raw.get("log_level", "info"), source)
    access_log = (
        checked(_check_access_log, raw["access_log"], source) if "access_log" in raw else None
    )
    raise_problems(problems)
    return EdgeConfig(
        source=source,
        listen=listen,
        data_dir=data_dir,
        isp_ranges=isp_ranges,
        extra_origin_cidrs=extra,
        buckets=MappingProxyType(buckets),
        origin_fetch=fetch,
        limits=limits,
        credentials=credentials,
        workers=workers,
        log_level=log_level,
        access_log=access_log,
    )


def _check_access_log(value: object, source: str) -> AccessLogConfig:
    """`access_log: PATH`, `access_log: null` (off), or a mapping with `path` and
    optionally `format`, `buffer` and `flush`."""
    if value is None:
        return AccessLogConfig(path=None)
    if isinstance(value, str):
        return AccessLogConfig(path=_check_path(value, "access_log", source))
    if not isinstance(value, Mapping):
        raise ConfigError(source, "access_log", "must be a path, null (off) or a mapping")
    _no_unknown_keys(value, {"path", "format", "buffer", "flush"}, "access_log.", source)
    path = value.get("path")
    settings: dict[str, Any] = {
        "path": None if path is None else _check_path(path, "access_log.path", source)
    }
    if "format" in value:
        if value["format"] not in _ACCESS_LOG_FORMATS:
            raise ConfigError(
                source, "access_log.format", f"must be one of {', '.join(_ACCESS_LOG_FORMATS)}"
            )
        settings["format"] = value["format"]
    if "buffer" in value:
        settings["buffer"] = _parse_size(value["buffer"], "access_log.buffer", source)
    if "flush" in value:
        item = value["flush"]
        if isinstance(item, bool) or not isinstance(item, int | float) or not item > 0:
            raise ConfigError(
                source, "access_log.flush", f"must be a number of seconds > 0, not {item!r}"
            )
        settings["flush"] = float(item)
    return AccessLogConfig(**settings)


def _check_log_level(value: object, source: str) -> str:
    if value not in LOG_LEVELS:
        raise ConfigError(source, "log_level", f"must be one of {', '.join(LOG_LEVELS)}")
    return str(value)


def _no_unknown_keys(raw: Mapping[Any, Any], allowed: set[str], prefix: str, source: str) -> None:
    for key in raw:
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            raise ConfigError(source, f"{prefix}{key}", f"unknown key (known: {known})")


def _check_listen(value: object, key: str, source: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(source, key, "must be a Twisted endpoint string like 'tcp:8080'")
    from twisted.internet.endpoints import _parseServer  # the parser serverFromString uses

    try:
        _parseServer(value, None)
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(source, key, f"not a valid endpoint string {value!r}: {e}") from None
    return value


def _check_path(value: object, key: str, source: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(source, key, "must be a non-empty path string")
    if "\0" in value:
        raise ConfigError(source, key, "contains a NUL byte")
    return Path(value).expanduser()


def _check_cidrs(value: object, source: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(source, "extra_origin_cidrs", "must be a list of CIDRs")
    cidrs = []
    for i, item in enumerate(value):
        key = f"extra_origin_cidrs[{i}]"
        if not isinstance(item, str):
            raise ConfigError(source, key, f"must be a CIDR string, not {item!r}")
        try:
            network = IPNetwork(item)
            strict = ipaddress.ip_network(item.strip(), strict=False)
        except (AddrFormatError, ValueError, TypeError):
            raise ConfigError(source, key, f"{item!r} is not a CIDR") from None
        cidrs.append(str(network.cidr) if strict else item)
    return tuple(cidrs)


def _check_buckets(value: object, source: str) -> dict[str, BucketConfig]:
    if not isinstance(value, Mapping):
        raise ConfigError(source, "buckets", "must be a mapping of bucket name to settings")
    buckets: dict[str, BucketConfig] = {}
    owners: dict[str, str] = {}
    problems: list[ConfigError] = []
    for name, settings in value.items():
        try:
            buckets[name] = _check_bucket(name, settings, owners, source)
        except ConfigError as e:
            problems.append(e)
    raise_problems(problems)
    return buckets


def _check_bucket(
    name: object, settings: object, owners: dict[str, str], source: str
) -> BucketConfig:
    prefix = f"buckets.{name}"
    if not isinstance(name, str) or not BUCKET_NAME_RE.fullmatch(name):
        raise ConfigError(
            source,
            prefix,
            "bad bucket name: lowercase letters, digits and '-', 1-50 characters, "
            "then '-<appid>' (digits), e.g. examplebucket-1250000000",
        )
    if settings is None:
        settings = {}
    if not isinstance(settings, Mapping):
        raise ConfigError(source, prefix, "must be a mapping (domains, origin)")
    _no_unknown_keys(settings, _BUCKET_KEYS, prefix + ".", source)
    domains = _check_domains(settings.get("domains", []), prefix + ".domains", source)
    for domain in domains:
        if domain in owners:
            raise ConfigError(
                source, prefix + ".domains", f"{domain!r} is already used by {owners[domain]}"
            )
        owners[domain] = name
    origin = None
    if settings.get("origin") is not None:
        origin = _check_origin(settings["origin"], prefix + ".origin", source)
    return BucketConfig(name=name, domains=domains, origin=origin)


MAX_WORKERS = 64


def check_workers(value: object, key: str, source: str) -> int:
    """A process count, or "auto" for one per CPU core."""
    if value == "auto":
        return max(1, min(MAX_WORKERS, os.cpu_count() or 1))
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_WORKERS:
        raise ConfigError(
            source, key, f"must be a number of processes 1-{MAX_WORKERS} or 'auto', not {value!r}"
        )
    return value


def _check_credentials(value: object, source: str) -> tuple[Credential, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(source, "credentials", "must be a list of {secret_id, secret_key}")
    credentials: list[Credential] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        key = f"credentials[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(source, key, "must be a mapping (secret_id, secret_key, buckets)")
        _no_unknown_keys(item, _CREDENTIAL_KEYS, key + ".", source)
        texts = {}
        for field_name in ("secret_id", "secret_key"):
            text = item.get(field_name)
            if not isinstance(text, str) or not text or text != text.strip() or len(text) > 256:
                raise ConfigError(
                    source, f"{key}.{field_name}", "must be a non-empty string without spaces"
                )
            if not text.isprintable() or any(c.isspace() for c in text):
                raise ConfigError(source, f"{key}.{field_name}", "must be printable, no spaces")
            texts[field_name] = text
        if texts["secret_id"] in seen:
            raise ConfigError(source, f"{key}.secret_id", "listed twice")
        seen.add(texts["secret_id"])
        buckets = item.get("buckets", ["*"])
        if (
            not isinstance(buckets, list)
            or not buckets
            or not all(
                isinstance(b, str) and (b == "*" or BUCKET_NAME_RE.fullmatch(b)) for b in buckets
            )
        ):
            raise ConfigError(
                source, f"{key}.buckets", 'must be a list of bucket names, or ["*"] for all'
            )
        credentials.append(Credential(texts["secret_id"], texts["secret_key"], tuple(buckets)))
    return tuple(credentials)


def _check_domains(value: object, key: str, source: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(source, key, "must be a list of host names")
    domains = []
    for i, item in enumerate(value):
        try:
            address = OriginAddress.parse(item)
        except ValueError as e:
            raise ConfigError(source, f"{key}[{i}]", str(e)) from None
        if address.port is not None:
            raise ConfigError(source, f"{key}[{i}]", f"{item!r}: a domain has no port")
        domains.append(address.host)
    return tuple(domains)


def _check_origin(value: object, key: str, source: str) -> OriginConfig:
    if not isinstance(value, Mapping):
        raise ConfigError(source, key, "must be a mapping (enabled, address)")
    _no_unknown_keys(value, _ORIGIN_KEYS, key + ".", source)
    enabled = value.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(source, key + ".enabled", f"must be true or false, not {enabled!r}")
    if "address" not in value:
        raise ConfigError(source, key + ".address", "is required")
    try:
        address = OriginAddress.parse(value["address"])
    except ValueError as e:
        raise ConfigError(source, key + ".address", str(e)) from None
    return OriginConfig(enabled=enabled, address=address)


def _check_fetch(value: object, source: str) -> OriginFetchConfig:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise ConfigError(source, "origin_fetch", "must be a mapping")
    _no_unknown_keys(value, set(_FETCH_KEYS), "origin_fetch.", source)
    settings: dict[str, Any] = {}
    for name, kind in _FETCH_KEYS.items():
        if name not in value:
            continue
        item = value[name]
        key = f"origin_fetch.{name}"
        if kind == "int":
            if isinstance(item, bool) or not isinstance(item, int) or item < 1:
                raise ConfigError(source, key, f"must be a whole number >= 1, not {item!r}")
            settings[name] = item
        elif kind == "seconds":
            if isinstance(item, bool) or not isinstance(item, int | float) or not item > 0:
                raise ConfigError(source, key, f"must be a number of seconds > 0, not {item!r}")
            settings[name] = float(item)
        else:
            settings[name] = _parse_size(item, key, source)
    return OriginFetchConfig(**settings)


def _check_limits(value: object, source: str) -> LimitsConfig:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise ConfigError(source, "limits", "must be a mapping")
    _no_unknown_keys(value, {"spool_bytes", "abort_incomplete_uploads_after"}, "limits.", source)
    settings: dict[str, Any] = {}
    if "spool_bytes" in value:
        settings["spool_bytes"] = _parse_size(value["spool_bytes"], "limits.spool_bytes", source)
    if "abort_incomplete_uploads_after" in value:
        item = value["abort_incomplete_uploads_after"]
        if isinstance(item, bool) or not isinstance(item, int | float) or not item > 0:
            raise ConfigError(
                source,
                "limits.abort_incomplete_uploads_after",
                f"must be a number of seconds > 0, not {item!r}",
            )
        settings["abort_incomplete_uploads_after"] = float(item)
    return LimitsConfig(**settings)


def _parse_size(value: object, key: str, source: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match:
            unit = (match.group(2) or "").upper().rstrip("B").rstrip("I")
            size = int(match.group(1)) * _SIZE_UNITS[unit]
            if size > 0:
                return size
    raise ConfigError(
        source, key, f"must be a size like 1073741824, '512MiB' or '5GiB', not {value!r}"
    )


def check_origin_addresses(config: EdgeConfig, accepts: Callable[[str], tuple[bool, str]]) -> None:
    """Refuse the config if an enabled origin given as an IP literal fails the ISP rule.

    Domain origins are judged when a copy starts (SPEC §5), since their addresses change.
    `accepts(ip)` answers (accepted, reason).
    """
    problems: list[ConfigError] = []
    for name, bucket in config.buckets.items():
        origin = bucket.active_origin
        if origin is None or origin.ip is None:
            continue
        ok, reason = accepts(str(origin.ip))
        if not ok:
            problems.append(
                config.error(
                    f"buckets.{name}.origin.address",
                    f"origin {origin.ip} is not accepted: {reason} "
                    "(only China Telecom, China Mobile, China Unicom and Great Wall Broadband "
                    "ranges, or extra_origin_cidrs)",
                )
            )
    raise_problems(problems)
