"""Reading the YAML file: duplicate keys refused, every top-level key judged on its own.

Everything an operator can get wrong is caught here, before any listener or file exists,
and reported naming the file, the key and the reason: a half-started edge that silently
ignores a typo is worse than one that refuses to start.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from edge.config.checks import (
    check_access_log,
    check_admin_listen,
    check_buckets,
    check_cidrs,
    check_credentials,
    check_fetch,
    check_limits,
    check_listen,
    check_log_level,
    check_path,
    check_ports_apart,
    check_workers,
    no_unknown_keys,
)
from edge.config.cluster import check_coordination, check_store, check_together
from edge.config.errors import ConfigError, raise_problems
from edge.config.model import DEFAULT_DATA_DIR, DEFAULT_LISTEN, EdgeConfig

_TOP_KEYS = {
    "listen",
    "admin_listen",
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
    "store",
    "coordination",
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
        overrides["listen"] = check_listen(listen, "--listen", source)
    if data_dir is not None:
        overrides["data_dir"] = check_path(data_dir, "--data-dir", source)
    if workers is not None:
        overrides["workers"] = check_workers(workers, "--workers", source)
    if overrides:
        config = _replace(config, **overrides)
    if "listen" in overrides:
        check_ports_apart(config.listen, config.admin_listen, source)
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

    checked(no_unknown_keys, raw, _TOP_KEYS, "", source)
    listen = checked(check_listen, raw.get("listen", DEFAULT_LISTEN), "listen", source)
    admin_raw = raw.get("admin_listen")
    admin_listen = None if admin_raw is None else checked(check_admin_listen, admin_raw, source)
    data_dir = checked(check_path, raw.get("data_dir", DEFAULT_DATA_DIR), "data_dir", source)
    isp_raw = raw.get("isp_ranges")
    isp_ranges = None if isp_raw is None else checked(check_path, isp_raw, "isp_ranges", source)
    extra = checked(check_cidrs, raw.get("extra_origin_cidrs", []), source, default=())
    buckets = checked(check_buckets, raw.get("buckets", {}), source, default={})
    fetch = checked(check_fetch, raw.get("origin_fetch", {}), source)
    limits = checked(check_limits, raw.get("limits", {}), source)
    credentials = checked(check_credentials, raw.get("credentials", []), source, default=())
    workers = checked(check_workers, raw.get("workers", 1), "workers", source)
    log_level = checked(check_log_level, raw.get("log_level", "info"), source)
    access_log = (
        checked(check_access_log, raw["access_log"], source) if "access_log" in raw else None
    )
    store = checked(check_store, raw.get("store"), source)
    coordination = checked(check_coordination, raw.get("coordination"), source)
    if listen is not None and admin_listen is not None:
        checked(check_ports_apart, listen, admin_listen, source)
    checked(check_together, store, coordination, buckets or {}, source)
    raise_problems(problems)
    return EdgeConfig(
        source=source,
        listen=listen,
        admin_listen=admin_listen,
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
        store=store,
        coordination=coordination,
    )
