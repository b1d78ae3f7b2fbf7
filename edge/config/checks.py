"""The checks of each config key: types, ranges, names, addresses, sizes and durations."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from netaddr import AddrFormatError, IPNetwork

from edge.config.addresses import OriginAddress, listen_address, loop_reason
from edge.config.errors import ConfigError, raise_problems
from edge.config.model import (
    BUCKET_NAME_RE,
    AccessLogConfig,
    BreakerConfig,
    BucketConfig,
    Credential,
    EdgeConfig,
    LimitsConfig,
    OriginConfig,
    OriginFetchConfig,
)

_SIZE_RE = re.compile(r"^\s*([0-9]+)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_ACCESS_LOG_FORMATS = ("combined", "json")
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
    "per_origin_concurrency": "int",
    "not_found_ttl": "seconds",
    "breaker": "breaker",
    "ca_file": "ca_file",
    "check_digests": "bool",
}


_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def check_access_log(value: object, source: str) -> AccessLogConfig:
    """`access_log: PATH`, `access_log: null` (off), or a mapping with `path` and
    optionally `format`, `buffer` and `flush`."""
    if value is None:
        return AccessLogConfig(path=None)
    if isinstance(value, str):
        return AccessLogConfig(path=check_path(value, "access_log", source))
    if not isinstance(value, Mapping):
        raise ConfigError(source, "access_log", "must be a path, null (off) or a mapping")
    no_unknown_keys(value, {"path", "format", "buffer", "flush"}, "access_log.", source)
    path = value.get("path")
    settings: dict[str, Any] = {
        "path": None if path is None else check_path(path, "access_log.path", source)
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


def check_log_level(value: object, source: str) -> str:
    if value not in LOG_LEVELS:
        raise ConfigError(source, "log_level", f"must be one of {', '.join(LOG_LEVELS)}")
    return str(value)


def no_unknown_keys(raw: Mapping[Any, Any], allowed: set[str], prefix: str, source: str) -> None:
    for key in raw:
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            raise ConfigError(source, f"{prefix}{key}", f"unknown key (known: {known})")


def check_listen(value: object, key: str, source: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(source, key, "must be a Twisted endpoint string like 'tcp:8080'")
    from twisted.internet.endpoints import _parseServer  # the parser serverFromString uses

    try:
        _parseServer(value, None)
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(source, key, f"not a valid endpoint string {value!r}: {e}") from None
    return value


def check_admin_listen(value: object, source: str) -> str:
    """`admin_listen`: an endpoint string like `listen` (null, the default, is off)."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            source,
            "admin_listen",
            "must be a Twisted endpoint string like 'tcp:8081:interface=127.0.0.1', or null",
        )
    return check_listen(value, "admin_listen", source)


def check_ports_apart(listen: str, admin_listen: str | None, source: str) -> None:
    """The admin port is another port: on the public one, /metrics and /console/ are
    bucket paths, and nobody could bind both."""
    if admin_listen is None:
        return
    public, admin = listen_address(listen), listen_address(admin_listen)
    if public is None or admin is None:  # a UNIX socket: the same path is the same port
        same = admin_listen.strip() == listen.strip()
    else:  # port 0 twice is two ports
        overlap = None in (public.interface, admin.interface)
        same = bool(public.port) and public.port == admin.port
        same = same and (overlap or public.interface == admin.interface)
    if same:
        raise ConfigError(source, "admin_listen", f"must differ from listen ({listen!r})")


def check_path(value: object, key: str, source: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(source, key, "must be a non-empty path string")
    if "\0" in value:
        raise ConfigError(source, key, "contains a NUL byte")
    return Path(value).expanduser()


def check_cidrs(value: object, source: str) -> tuple[str, ...]:
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


def check_buckets(value: object, source: str) -> dict[str, BucketConfig]:
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
    no_unknown_keys(settings, _BUCKET_KEYS, prefix + ".", source)
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


def check_credentials(value: object, source: str) -> tuple[Credential, ...]:
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
        no_unknown_keys(item, _CREDENTIAL_KEYS, key + ".", source)
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
    no_unknown_keys(value, _ORIGIN_KEYS, key + ".", source)
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


def check_fetch(value: object, source: str) -> OriginFetchConfig:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise ConfigError(source, "origin_fetch", "must be a mapping")
    no_unknown_keys(value, set(_FETCH_KEYS), "origin_fetch.", source)
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
        elif kind == "breaker":
            settings[name] = _check_breaker(item, key, source)
        elif kind == "ca_file":
            settings[name] = _check_ca_file(item, key, source)
        elif kind == "bool":
            if not isinstance(item, bool):
                raise ConfigError(source, key, f"must be true or false, not {item!r}")
            settings[name] = item
        else:
            settings[name] = _parse_size(item, key, source)
    return OriginFetchConfig(**settings)


def _check_ca_file(value: object, key: str, source: str) -> Path | None:
    """A PEM bundle read now, so a missing or garbled file stops start-up (or a reload)
    instead of failing every HTTPS copy later."""
    if value is None:
        return None
    path = check_path(value, key, source)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(source, key, f"cannot read {path}: {e.strerror or e}") from None
    from cryptography import x509  # only a config with HTTPS origins needs it

    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        certificates = []
    if not certificates:
        raise ConfigError(source, key, f"{path} holds no PEM certificate")
    return path


def _check_breaker(value: object, key: str, source: str) -> BreakerConfig:
    """`origin_fetch.breaker: {failures, window, open}`; each part optional."""
    if value is None:
        return BreakerConfig()
    if not isinstance(value, Mapping):
        raise ConfigError(source, key, "must be a mapping (failures, window, open)")
    no_unknown_keys(value, {"failures", "window", "open"}, key + ".", source)
    settings: dict[str, Any] = {}
    failures = value.get("failures", BreakerConfig.failures)
    if isinstance(failures, bool) or not isinstance(failures, int) or failures < 1:
        raise ConfigError(
            source, key + ".failures", f"must be a whole number >= 1, not {failures!r}"
        )
    settings["failures"] = failures
    for name in ("window", "open"):
        item = value.get(name, getattr(BreakerConfig, name))
        if isinstance(item, bool) or not isinstance(item, int | float) or not item > 0:
            raise ConfigError(
                source, f"{key}.{name}", f"must be a number of seconds > 0, not {item!r}"
            )
        settings[name] = float(item)
    return BreakerConfig(**settings)


def check_limits(value: object, source: str) -> LimitsConfig:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise ConfigError(source, "limits", "must be a mapping")
    no_unknown_keys(value, {"spool_bytes", "abort_incomplete_uploads_after"}, "limits.", source)
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
    `accepts(ip)` answers (accepted, reason). An origin that would loop back to the edge
    (SPEC §12) is refused too, whatever its kind.
    """
    problems: list[ConfigError] = []
    listening = listen_address(config.listen)
    for name, bucket in config.buckets.items():
        origin = bucket.active_origin
        if origin is None:
            continue
        loop = loop_reason(origin, bucket.domains, () if listening is None else (listening,))
        if loop is not None:
            problems.append(config.error(f"buckets.{name}.origin.address", loop))
            continue
        if origin.ip is None:
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
