"""`admin_listen` (SPEC §9): off by default, an endpoint string like `listen`, never the
public port; every refusal names the file, the key and the reason."""

from __future__ import annotations

import pytest

from edge.config import ConfigError, load_config
from edge.process.reload import RESTART_ONLY
from tests.configs import load_text, refusal


def test_admin_port_is_off_by_default(tmp_path):
    """No `admin_listen` (or null) means no admin port."""
    assert load_text(tmp_path, "listen: 'tcp:8080'\n").admin_listen is None
    assert load_text(tmp_path, "admin_listen: null\n").admin_listen is None
    assert load_config(None).admin_listen is None


def test_an_endpoint_string_is_kept(tmp_path):
    """A valid endpoint string is taken as written, beside a public port of its own."""
    config = load_text(tmp_path, "admin_listen: 'tcp:8081:interface=127.0.0.1'\n")
    assert config.admin_listen == "tcp:8081:interface=127.0.0.1"
    both_zero = "listen: 'tcp:0'\nadmin_listen: 'tcp:0'\n"  # port 0 twice is two ports
    assert load_text(tmp_path, both_zero).admin_listen == "tcp:0"
    apart = "listen: 'tcp:8080:interface=127.0.0.1'\nadmin_listen: 'tcp:8080:interface=127.0.0.2'\n"
    assert load_text(tmp_path, apart).admin_listen == "tcp:8080:interface=127.0.0.2"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("admin_listen: 'bogus:1'\n", "not a valid endpoint string"),
        ("admin_listen: 8081\n", "must be a Twisted endpoint string"),
        ("admin_listen: ''\n", "must be a Twisted endpoint string"),
        ("admin_listen: [tcp:8081]\n", "must be a Twisted endpoint string"),
        ("listen: 'tcp:8080'\nadmin_listen: 'tcp:8080:interface=127.0.0.1'\n", "must differ"),
        ("listen: 'tcp:8080:interface=127.0.0.1'\nadmin_listen: 'tcp:8080'\n", "must differ"),
        ("listen: 'unix:/tmp/e.sock'\nadmin_listen: 'unix:/tmp/e.sock'\n", "must differ"),
    ],
)
def test_bad_admin_listen_names_file_key_and_reason(tmp_path, text, words):
    """Each mistake is one line: the file, `admin_listen`, what is wrong."""
    line = str(refusal(tmp_path, text))
    assert line.startswith(f"{tmp_path / 'c.yaml'}: admin_listen: "), line
    assert words in line, line


def test_listen_override_is_checked_against_admin_listen(tmp_path):
    """`--listen` onto the admin port is refused like the same mistake in the file."""
    path = tmp_path / "c.yaml"
    path.write_text("admin_listen: 'tcp:9090'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, listen="tcp:9090")
    assert "admin_listen: must differ" in str(info.value)


def test_admin_listen_needs_a_restart():
    """A SIGHUP leaves the admin port where it listens (a new port needs a new listener),
    with the usual warning."""
    assert "admin_listen" in RESTART_ONLY
