"""The YAML config of SPEC §2 turned into immutable, validated values.

`load_config` reads a file (or the embedded defaults) and returns an `EdgeConfig`, or raises
a `ConfigError` whose one line names the file, the key and the reason. The package keeps
the reading (`load`), the per-key checks (`checks`), the values (`model`), origin address
parsing (`addresses`) and the error types (`errors`) apart; this module is its public face,
so callers import from `edge.config` whatever module a name lives in.
"""

from edge.config.addresses import ListenAddress, OriginAddress, listen_address, loop_reason
from edge.config.checks import check_origin_addresses, check_workers
from edge.config.cluster import CoordinationConfig, StoreConfig
from edge.config.errors import ConfigError, ConfigProblems, raise_problems
from edge.config.load import load_config, parse_config
from edge.config.model import (
    BUCKET_NAME_RE,
    DEFAULT_DATA_DIR,
    DEFAULT_LISTEN,
    AccessLogConfig,
    BreakerConfig,
    BucketConfig,
    Credential,
    EdgeConfig,
    LimitsConfig,
    OriginConfig,
    OriginFetchConfig,
)

__all__ = [
    "BUCKET_NAME_RE",
    "DEFAULT_DATA_DIR",
    "DEFAULT_LISTEN",
    "AccessLogConfig",
    "BreakerConfig",
    "BucketConfig",
    "ConfigError",
    "ConfigProblems",
    "CoordinationConfig",
    "Credential",
    "EdgeConfig",
    "LimitsConfig",
    "ListenAddress",
    "OriginAddress",
    "OriginConfig",
    "OriginFetchConfig",
    "StoreConfig",
    "check_origin_addresses",
    "check_workers",
    "listen_address",
    "load_config",
    "loop_reason",
    "parse_config",
    "raise_problems",
]
