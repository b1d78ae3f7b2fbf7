"""The ISP index: overlapping tables, range boundaries, IPv4/IPv6, the bundled data."""

from __future__ import annotations

import ipaddress

import pytest
from netaddr import IPAddress, IPNetwork

from edge.isp.index import ISPIndex, bundled_tables_dir
from edge.isp.table import TableError, parse_table


def _index(**tables: list[str]) -> ISPIndex:
    return ISPIndex.from_tables(
        {isp: [IPNetwork(c) for c in cidrs] for isp, cidrs in tables.items()}
    )


def test_overlapping_tables_give_both_isps():
    """An address in two ISPs' tables belongs to both; each side of the overlap to one."""
    index = _index(chinatelecom=["10.0.0.0/16"], chinaunicom=["10.0.128.0/17", "10.1.0.0/24"])
    assert index.lookup("10.0.0.1") == {"chinatelecom"}
    assert index.lookup("10.0.200.1") == {"chinatelecom", "chinaunicom"}
    assert index.lookup("10.1.0.5") == {"chinaunicom"}
    assert index.lookup("10.2.0.0") == frozenset()


@pytest.mark.parametrize(
    "address, expected",
    [
        ("1.0.0.255", set()),
        ("1.0.1.0", {"gwbn"}),
        ("1.0.1.255", {"gwbn"}),
        ("1.0.2.0", {"gwbn"}),  # adjacent block: merged into one range
        ("1.0.3.255", {"gwbn"}),
        ("1.0.4.0", set()),
        ("0.0.0.0", set()),
        ("255.255.255.255", set()),
    ],
)
def test_boundaries(address, expected):
    """First and last address of a range are in; the neighbours are out."""
    index = _index(gwbn=["1.0.1.0/24", "1.0.2.0/23"])
    assert index.lookup(address) == expected


def test_ipv6_and_mapped_ipv4():
    """IPv6 ranges work; ::ffff:a.b.c.d looks up the IPv4 address."""
    index = _index(chinamobile=["2409:8000::/20", "211.136.0.0/16"])
    assert index.lookup("2409:8000::1") == {"chinamobile"}
    assert index.lookup("2409:9000::1") == set()
    assert index.lookup("::ffff:211.136.192.6") == {"chinamobile"}
    assert index.lookup(IPAddress("211.136.1.1")) == {"chinamobile"}
    assert index.lookup(ipaddress.ip_address("2409:8000::2")) == {"chinamobile"}
    assert index.lookup_int(4, int(IPAddress("211.136.0.0"))) == {"chinamobile"}


@pytest.mark.parametrize("bad", ["", "1.2.3", "example.com", "1.2.3.4/24", "::g"])
def test_invalid_input(bad):
    """A non-address is a ValueError, not an empty answer."""
    with pytest.raises(ValueError):
        _index(gwbn=["1.0.1.0/24"]).lookup(bad)


def test_summary_counts_merged_ranges():
    """The summary counts CIDRs after merging and addresses per IP version."""
    summary = _index(gwbn=["1.0.1.0/24", "1.0.2.0/23", "2001:250::/32"]).summary()["gwbn"]
    assert (summary.cidrs_v4, summary.addresses_v4) == (2, 768)
    assert (summary.cidrs_v6, summary.addresses_v6) == (1, 2**96)


def test_table_parsing_is_strict(tmp_path):
    """Comments and blank lines are skipped; a malformed line names file and line."""
    assert parse_table("# header\n\n1.0.1.0/24  # note\n", "t") == [IPNetwork("1.0.1.0/24")]
    for bad in ["1.0.1.0", "1.0.1.0/33", "1.0.1.1/24", "nonsense/8"]:
        with pytest.raises(TableError) as info:
            parse_table(f"# h\n{bad}\n", "t.txt")
        assert str(info.value).startswith("t.txt:2:")
    (tmp_path / "gwbn.txt").write_text("1.0.1.0/24\n")
    assert ISPIndex.from_directory(tmp_path).lookup("1.0.1.1") == {"gwbn"}


BUNDLED = bundled_tables_dir()


@pytest.mark.parametrize(
    "address, isp",
    [
        ("202.96.128.86", "chinatelecom"),
        ("211.136.192.6", "chinamobile"),
        ("202.106.0.20", "chinaunicom"),
    ],
)
def test_bundled_tables_know_the_big_three(address, isp):
    """The shipped tables place well-known resolvers of each big ISP in that ISP."""
    assert isp in ISPIndex.from_directory(BUNDLED).lookup(address)


def test_bundled_tables_leave_out_foreign_and_special_space():
    """8.8.8.8 and private space are in no table; every ISP has IPv4, the big three IPv6."""
    index = ISPIndex.from_directory(BUNDLED)
    assert index.lookup("8.8.8.8") == frozenset()
    assert index.lookup("10.0.0.1") == frozenset()
    summary = index.summary()
    for isp in ("chinatelecom", "chinamobile", "chinaunicom"):
        assert summary[isp].cidrs_v4 > 100 and summary[isp].cidrs_v6 > 0
    assert summary["gwbn"].cidrs_v4 > 0
