"""The config keys that bound what clients and resolvers can make the edge hold:
`limits.spool_bytes` and `origin_fetch.dns_timeout`."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import ConfigError, LimitsConfig, load_config


def _load(tmp_path: Path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path, load_config(path)


def test_spool_bytes_default_and_sizes(tmp_path):
    """`limits.spool_bytes` defaults to 10 GiB (two of COS's largest PUTs) and takes the
    same sizes as `origin_fetch.max_object_size`."""
    assert load_config(None).limits == LimitsConfig(spool_bytes=10 * 1024**3)
    _, config = _load(tmp_path, "limits:\n  spool_bytes: 512MiB\n")
    assert config.limits.spool_bytes == 512 * 1024**2
    _, config = _load(tmp_path, "limits:\n  spool_bytes: 1000\n")
    assert config.limits.spool_bytes == 1000


@pytest.mark.parametrize(
    "text, key, words",
    [
        ("limits:\n  spool_bytes: lots\n", "limits.spool_bytes", "must be a size"),
        ("limits:\n  spool_bytes: 0\n", "limits.spool_bytes", "must be a size"),
        ("limits:\n  spool: 1GiB\n", "limits.spool", "unknown key"),
        ("limits: 5\n", "limits", "must be a mapping"),
    ],
)
def test_bad_limits_name_file_key_and_reason(tmp_path, text, key, words):
    """A bad `limits` value stops start-up with the file, the key and the reason."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.source == str(path)
    assert info.value.key == key
    assert words in info.value.reason


def test_dns_timeout_default_and_value(tmp_path):
    """`origin_fetch.dns_timeout` defaults to 3 seconds and takes seconds like the other
    `origin_fetch` timeouts."""
    assert load_config(None).origin_fetch.dns_timeout == 3.0
    _, config = _load(tmp_path, "origin_fetch:\n  dns_timeout: 0.5\n")
    assert config.origin_fetch.dns_timeout == 0.5


def test_bad_dns_timeout_names_file_key_and_reason(tmp_path):
    """A dns_timeout that is not a positive number stops start-up, naming file and key."""
    path = tmp_path / "bad.yaml"
    path.write_text("origin_fetch:\n  dns_timeout: never\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: origin_fetch.dns_timeout: must be a number")
