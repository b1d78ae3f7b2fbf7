"""Config parsing: every key checked, one-line errors naming file, key and reason."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edge.config import ConfigError, OriginAddress, load_config, parse_config
from tests.configs import load_text as _load
from tests.configs import refusal as _error

GOOD = """
listen: "tcp:8080:interface=127.0.0.1"
data_dir: ./d
buckets:
  examplebucket-1250000000:
    domains: [examplebucket-1250000000.file.myqcloud.com]
    origin:
      enabled: true
      address: "abc.qq.com:8080"
"""


def test_good_config(tmp_path):
    """The SPEC's example parses into the expected values."""
    config = _load(tmp_path, GOOD)
    bucket = config.buckets["examplebucket-1250000000"]
    assert bucket.domains == ("examplebucket-1250000000.file.myqcloud.com",)
    assert bucket.active_origin == OriginAddress("abc.qq.com", 8080)
    assert config.listen == "tcp:8080:interface=127.0.0.1"
    assert config.isp_ranges is None and config.extra_origin_cidrs == ()


def test_defaults_without_file():
    """No config file: the embedded defaults of SPEC §1."""
    config = load_config(None)
    assert config.listen == "tcp:8080:interface=127.0.0.1"
    assert str(config.data_dir) == "cosedge-data"
    assert dict(config.buckets) == {}


def test_overrides_win(tmp_path):
    """--listen and --data-dir override the file."""
    path = tmp_path / "c.yaml"
    path.write_text(GOOD)
    config = load_config(path, listen="tcp:0", data_dir="/srv/x")
    assert config.listen == "tcp:0" and str(config.data_dir) == "/srv/x"


def test_config_is_immutable(tmp_path):
    """Values cannot be changed after validation."""
    config = _load(tmp_path, GOOD)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.listen = "tcp:1"
    with pytest.raises(TypeError):
        config.buckets["x"] = None


@pytest.mark.parametrize(
    "text, key, words",
    [
        ("lisen: tcp:80\n", "lisen", "unknown key"),
        ("buckets:\n  Bad_Bucket-1: {}\n", "buckets.Bad_Bucket-1", "bad bucket name"),
        ("buckets:\n  nodigits: {}\n", "buckets.nodigits", "bad bucket name"),
        ("buckets:\n  " + "a" * 51 + "-125: {}\n", "buckets." + "a" * 51 + "-125", "bad bucket"),
        ("buckets:\n  b-1:\n    domians: []\n", "buckets.b-1.domians", "unknown key"),
        (
            "buckets:\n  b-1:\n    origin: {address: 'http://a.com'}\n",
            "buckets.b-1.origin.address",
            "scheme",
        ),
        (
            "buckets:\n  b-1:\n    origin: {address: 'a.com/path'}\n",
            "buckets.b-1.origin.address",
            "path",
        ),
        (
            "buckets:\n  b-1:\n    origin: {address: 'u:p@a.com'}\n",
            "buckets.b-1.origin.address",
            "user info",
        ),
        (
            "buckets:\n  b-1:\n    origin: {address: 'a .com'}\n",
            "buckets.b-1.origin.address",
            "spaces",
        ),
        (
            "buckets:\n  b-1:\n    origin: {address: 'a.com:70000'}\n",
            "buckets.b-1.origin.address",
            "outside 1-65535",
        ),
        (
            "buckets:\n  b-1:\n    origin: {address: 'a.com:0'}\n",
            "buckets.b-1.origin.address",
            "outside 1-65535",
        ),
        (
            "buckets:\n  b-1:\n    origin: {address: '2001:db8::1'}\n",
            "buckets.b-1.origin.address",
            "brackets",
        ),
        (
            "buckets:\n  b-1:\n    origin: {enabled: yes please, address: a.com}\n",
            "buckets.b-1.origin.enabled",
            "true or false",
        ),
        (
            "buckets:\n  b-1:\n    origin: {enabled: true}\n",
            "buckets.b-1.origin.address",
            "required",
        ),
        (
            "buckets:\n  b-1:\n    origin: {address: a.com, port: 1}\n",
            "buckets.b-1.origin.port",
            "unknown key",
        ),
        (
            "buckets:\n  a-1: {domains: [x.com]}\n  b-1: {domains: [X.com]}\n",
            "buckets.b-1.domains",
            "already used",
        ),
        ("extra_origin_cidrs: [10.0.0.0/33]\n", "extra_origin_cidrs[0]", "not a CIDR"),
        ("listen: 'bogus:1'\n", "listen", "endpoint"),
        ("origin_fetch: {concurrency: 0}\n", "origin_fetch.concurrency", ">= 1"),
        ("origin_fetch: {max_object_size: lots}\n", "origin_fetch.max_object_size", "size"),
        ("origin_fetch: {idle_timout: 3}\n", "origin_fetch.idle_timout", "unknown key"),
        ("listen: a\nlisten: b\n", "line 2", "duplicate key"),
        ("buckets: [1, 2\n", "line", "YAML error"),
        ("- just\n- a list\n", "(top level)", "mapping"),
    ],
)
def test_bad_configs_name_file_key_and_reason(tmp_path, text, key, words):
    """Each mistake is refused with one line naming the file, the key and what is wrong."""
    error = _error(tmp_path, text)
    line = str(error)
    assert "\n" not in line
    assert line.startswith(str(tmp_path / "c.yaml") + ": ")
    assert key in line, line
    assert words in line, line


def test_unreadable_file(tmp_path):
    """A missing config file is a config error, not a traceback."""
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert "cannot read" in str(info.value)


def test_sizes_and_seconds():
    """origin_fetch accepts sizes with binary units and numbers of seconds."""
    config = parse_config(
        {"origin_fetch": {"max_object_size": "512MiB", "idle_timeout": 2, "concurrency": 3}},
        "t",
    )
    assert config.origin_fetch.max_object_size == 512 * 1024**2
    assert config.origin_fetch.idle_timeout == 2.0
    assert config.origin_fetch.concurrency == 3


@pytest.mark.parametrize(
    "text, netloc, port",
    [
        ("abc.qq.com", "abc.qq.com", 80),
        ("ABC.qq.com:8080", "abc.qq.com:8080", 8080),
        ("202.96.128.86", "202.96.128.86", 80),
        ("[2001:db8::1]:8080", "[2001:db8::1]:8080", 8080),
        ("[2001:DB8:0::1]", "[2001:db8::1]", 80),
    ],
)
def test_origin_address_parse(text, netloc, port):
    """Good origin addresses normalise to the netloc used in Location and Host."""
    address = OriginAddress.parse(text)
    assert address.netloc == netloc
    assert address.connect_port == port


@pytest.mark.parametrize(
    "text",
    [
        "",
        " a.com",
        "a.com:",
        "a.com:x",
        "1.2.3",
        "1.2.3.256",
        "[::1",
        "[fe80::1%eth0]",
        "a_b.com",
        "-a.com",
        "a.com.",
        ":80",
        "[::1]:",
        "a.com#x",
        "a.com?x",
        80,
        None,
    ],
)
def test_origin_address_refused(text):
    """Malformed addresses are refused with a reason."""
    with pytest.raises(ValueError):
        OriginAddress.parse(text)


def test_example_config_is_valid():
    """The shipped example config parses."""
    root = Path(__file__).resolve().parents[1]
    config = load_config(root / "examples" / "cosedge.yaml")
    assert "examplebucket-1250000000" in config.buckets
