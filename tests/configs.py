"""Loading a config text the way the edge does (from a file), for the config tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import ConfigError, EdgeConfig, load_config


def load_text(tmp_path: Path, text: str) -> EdgeConfig:
    """`text` written to a YAML file in `tmp_path` and loaded by `load_config`."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_config(path)


def refusal(tmp_path: Path, text: str) -> ConfigError:
    """The ConfigError loading `text` raises (the test fails if it loads)."""
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    return info.value
