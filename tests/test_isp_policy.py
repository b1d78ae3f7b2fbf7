"""The origin address rule of SPEC §5: tables, extra_origin_cidrs, special space, reload."""

from __future__ import annotations

import pytest

from edge.isp.policy import OriginAddressPolicy
from edge.isp.table import TableError


@pytest.fixture
def tables(tmp_path):
    (tmp_path / "chinatelecom.txt").write_text("# t\n202.96.128.0/18\n240e::/20\n")
    (tmp_path / "chinaunicom.txt").write_text("# t\n202.106.0.0/16\n")
    return tmp_path


def test_table_addresses_pass(tables):
    """An address in an ISP table is accepted and the ISPs are named."""
    verdict = OriginAddressPolicy(tables).check("202.96.128.86")
    assert verdict.accepted and verdict.isps == {"chinatelecom"}
    assert verdict.reason == "in chinatelecom"
    assert OriginAddressPolicy(tables).check("240e::1").accepted


def test_other_public_addresses_fail(tables):
    """A public address in no table is refused."""
    verdict = OriginAddressPolicy(tables).check("8.8.8.8")
    assert not verdict.accepted and verdict.reason == "not in any ISP table"


@pytest.mark.parametrize(
    "address, kind",
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "CGNAT"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fd00::1", "private"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
    ],
)
def test_special_addresses_never_pass_from_tables(tmp_path, address, kind):
    """Special-purpose space is refused, with its kind named, even if a table lists it."""
    (tmp_path / "chinatelecom.txt").write_text(
        "0.0.0.0/1\n128.0.0.0/1\n::/1\n8000::/1\n"  # a broken table claiming everything
    )
    verdict = OriginAddressPolicy(tmp_path).check(address)
    assert not verdict.accepted
    assert kind in verdict.reason


def test_extra_cidrs_open_special_space(tables):
    """extra_origin_cidrs admits listed addresses, loopback included, and only those."""
    policy = OriginAddressPolicy(tables, ["127.0.0.1/32", "fd00::/8"])
    assert policy.check("127.0.0.1").accepted
    assert policy.check("::ffff:127.0.0.1").accepted
    assert policy.check("fd00::5").accepted
    assert not policy.check("127.0.0.2").accepted


def test_bad_extra_cidr_is_named(tables):
    """A malformed extra CIDR is a ValueError naming it."""
    with pytest.raises(ValueError, match="10.0.0.0/40"):
        OriginAddressPolicy(tables, ["10.0.0.0/40"])


def test_reload_swaps_and_failed_reload_keeps_old(tables):
    """reload() picks up new tables; a broken table raises and the old index stays."""
    policy = OriginAddressPolicy(tables)
    assert not policy.check("1.0.1.1").accepted
    (tables / "gwbn.txt").write_text("1.0.1.0/24\n")
    policy.reload()
    assert policy.check("1.0.1.1").isps == {"gwbn"}
    (tables / "gwbn.txt").write_text("1.0.1.0/24\nbroken\n")
    with pytest.raises(TableError):
        policy.reload()
    assert policy.check("1.0.1.1").accepted
