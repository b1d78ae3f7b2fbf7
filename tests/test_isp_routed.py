"""The routing filter (`cosedge-isp update --routed mmdb:PATH`), the soft list, the shrink
guard's baseline across the filter's introduction, and the ASN-candidate scan, on tiny
synthetic inputs: an iptoasn-style .mmdb written by the test with mmdb-writer, a few CSV rows
and an ip2region file from `tests.xdb`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import maxminddb  # noqa: F401 - the test extra installs it; the updater imports it lazily
import mmdb_writer
import pytest
from hypothesis import given
from hypothesis import strategies as st
from netaddr import IPSet

from edge.isp.asncsv import ASNMap
from edge.isp.cli import main as cli_main
from edge.isp.index import ISPIndex
from edge.isp.intervals import intersect_intervals, merge_intervals, subtract_intervals
from edge.isp.routed import RoutedSpec, read_routed_mmdb
from edge.isp.sources import SourceError
from edge.isp.table import read_table_texts, read_tables
from edge.isp.update import main
from tests.xdb import write_xdb

ASNS = """\
asns:
  - {asn: 4134, isp: chinatelecom, name: "Chinanet"}
  - {asn: 9394, isp: chinamobile, name: "China TieTong"}
  - {asn: 4837, isp: chinaunicom, name: "CHINA UNICOM China169 Backbone"}
  - {asn: 17964, isp: gwbn, name: "Dian-Xin-Tong"}
excluded:
  - {asn: 58453, name: "China Mobile International Limited", reason: "overseas"}
rejected:
  - {asn: 38365, name: "Baidu", reason: "a content company's own network"}
"""

# 36.0.0.0/16 Telecom: announced in CN.  175.64.0.0/16 Tietong: registered, announced by
# nobody (the RIR fill-in of the issue).  39.0.0.0/24 Tietong: announced by a foreign ASN.
# 58.16.0.0/16 Unicom: half announced in CN.  IPv6 likewise.
CSV = """\
36.0.0.0,36.0.255.255,4134,Chinanet
39.0.0.0,39.0.0.255,9394,China TieTong
175.64.0.0,175.64.255.255,9394,China TieTong
58.16.0.0,58.16.255.255,4837,CHINA UNICOM China169 Backbone
59.108.0.0,59.108.0.255,17964,Dian-Xin-Tong
61.0.0.0,61.0.0.255,133774,Fuzhou
61.0.1.0,61.0.1.255,38365,Baidu
61.0.2.0,61.0.2.255,58453,China Mobile International Limited
240e::,240e:0:ffff:ffff:ffff:ffff:ffff:ffff,4134,Chinanet
2408:8000::,2408:8001:ffff:ffff:ffff:ffff:ffff:ffff,4837,CHINA UNICOM China169 Backbone
"""

ROUTED = [
    ("36.0.0.0/16", "CN"),
    ("39.0.0.0/24", "US"),
    ("58.16.0.0/17", "CN"),
    ("59.108.0.0/24", "CN"),
    ("61.0.0.0/23", "CN"),
    ("61.0.2.0/24", "HK"),
    ("8.8.8.0/24", "US"),
    ("240e::/32", "CN"),
    ("2408:8000::/32", "CN"),
    ("2001:4860::/32", "US"),
]

XDB_ROWS = [
    ("61.0.0.0", "61.0.0.255", "中国|0|福建省|福州市|电信"),
    ("61.0.1.0", "61.0.1.255", "中国|0|北京|北京市|电信"),
    ("61.0.2.0", "61.0.2.255", "中国|0|香港|0|移动"),
]


def write_mmdb(path: Path, records: Sequence[tuple[str, Any]]) -> Path:
    """An iptoasn-country-style database: one IPv6 tree holding IPv4 and IPv6 networks."""
    writer = mmdb_writer.MMDBWriter(
        ip_version=6, database_type="country", ipv4_compatible=True, description="test"
    )
    for cidr, country in records:
        record = {"country_code": country} if isinstance(country, str) else country
        writer.insert_network(IPSet([cidr]), record)
    writer.to_db_file(str(path))
    return path


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "asns.yaml").write_text(ASNS, encoding="utf-8")
    (tmp_path / "asn.csv").write_text(CSV, encoding="utf-8")
    return {
        "asns": tmp_path / "asns.yaml",
        "csv": tmp_path / "asn.csv",
        "mmdb": write_mmdb(tmp_path / "routed.mmdb", ROUTED),
        "xdb": write_xdb(tmp_path / "ip2region.xdb", XDB_ROWS),
        "out": tmp_path / "tables",
    }


def update(inputs: dict[str, Path], *extra: str, csv: Path | None = None) -> int:
    argv = ["--from", f"asn-csv:{csv or inputs['csv']}", "--asns", str(inputs["asns"])]
    return main([*argv, "--out", str(inputs["out"]), *extra])


def networks(out: Path) -> dict[str, set[str]]:
    return {isp: {str(n) for n in nets} for isp, nets in read_tables(out).items()}


# --- reading the mmdb ----------------------------------------------------------------------


def test_mmdb_reader_splits_domestic_from_announced(inputs):
    """CN records are the domestic space, every record is announced space; IPv4 networks
    stored in the IPv6 tree come back as IPv4."""
    routed = read_routed_mmdb(RoutedSpec.parse(f"mmdb:{inputs['mmdb']}"), inputs["mmdb"])
    assert (0x24000000, 0x2400FFFF) in routed.domestic[4]  # 36.0.0.0/16
    assert (0x27000000, 0x270000FF) not in routed.domestic[4]  # 39.0.0.0/24, US
    assert (0x27000000, 0x270000FF) in routed.announced[4]
    assert sum(b - a + 1 for a, b in routed.domestic[4]) == 65536 + 32768 + 256 + 512
    assert sum(b - a + 1 for a, b in routed.announced[4]) == 65536 + 32768 + 256 * 6
    assert sum(b - a + 1 for a, b in routed.domestic[6]) == 2 * 2**96
    assert any("IPv6: announced" in note for note in routed.notes)


@pytest.mark.parametrize(
    "records, words",
    [
        ([("36.0.0.0/16", "CN")], "no IPv6 space routed by CN ASNs"),
        ([("240e::/32", "CN")], "no IPv4 space routed by CN ASNs"),
        ([("36.0.0.0/16", {"asn": 4134}), ("240e::/32", "CN")], "36.0.0.0/16: expected"),
        ([("36.0.0.0/16", "China"), ("240e::/32", "CN")], "two-letter country_code"),
    ],
)
def test_mmdb_without_usable_data_is_refused(tmp_path, records, words):
    """A filter missing one IP version would empty half of every table, and a record
    without a country code means the file is not what the filter expects: both refused."""
    path = write_mmdb(tmp_path / "bad.mmdb", records)
    with pytest.raises(SourceError, match=words):
        read_routed_mmdb(RoutedSpec("mmdb", str(path)), path)


def test_not_an_mmdb_stops_the_update(inputs, capsys):
    """A damaged download is an error naming the file, and nothing is written."""
    inputs["mmdb"].write_bytes(b"not a maxmind db" * 100)
    assert update(inputs, "--routed", f"mmdb:{inputs['mmdb']}") == 2
    assert f"{inputs['mmdb']}: not a readable MaxMind DB file" in capsys.readouterr().err
    assert not inputs["out"].exists()


@pytest.mark.parametrize("spec", ["geoip:x.mmdb", "mmdb:", "x.mmdb"])
def test_bad_routed_spec(inputs, capsys, spec):
    """Only `mmdb:PATH` is a routing filter."""
    assert update(inputs, "--routed", spec) == 2
    assert "expected mmdb:PATH" in capsys.readouterr().err


# --- the filter in the update ----------------------------------------------------------------


def test_filter_keeps_only_space_announced_by_cn_asns(inputs, capsys):
    """Unannounced registrations (175.64/16) and foreign-announced space (39.0.0/24) leave
    the tables, IPv4 and IPv6; the cut is printed per ISP in those two parts."""
    assert update(inputs, "--routed", f"mmdb:{inputs['mmdb']}") == 0
    tables = networks(inputs["out"])
    assert tables["chinatelecom"] == {"36.0.0.0/16", "240e::/32"}
    assert tables["chinamobile"] == set()
    assert tables["chinaunicom"] == {"58.16.0.0/17", "2408:8000::/32"}
    assert tables["gwbn"] == {"59.108.0.0/24"}
    out = capsys.readouterr().out
    assert (
        "chinamobile: before IPv4 65,792 / IPv6 0 /48s; announced by nobody IPv4 65,536 / IPv6"
        " 0 /48s (removed); announced by a foreign ASN IPv4 256 / IPv6 0 /48s (removed);"
        " after IPv4 0 / IPv6 0 /48s" in out
    )
    assert "chinaunicom: before IPv4 65,536 / IPv6 131,072.0 /48s; announced by nobody" in out
    head = read_table_texts(inputs["out"])["chinatelecom"] or ""
    assert "# filter: routed by CN ASNs (mmdb): all else removed" in head
    assert "licence: PDDL-1.0" in head
    index = ISPIndex.from_directory(inputs["out"])
    assert index.lookup("175.64.1.1") == frozenset()
    assert index.lookup("36.0.1.1") == {"chinatelecom"}


def test_registration_added_space_is_filtered_too(inputs):
    """Space that only the registration stage adds is cut by the same filter."""
    rows = XDB_ROWS + [("175.64.0.0", "175.64.0.255", "中国|0|北京|北京市|鹏博士")]
    write_xdb(inputs["xdb"], sorted(rows, key=lambda r: tuple(map(int, r[0].split(".")))))
    argv = ["--from", f"ip2region:{inputs['xdb']}", "--routed", f"mmdb:{inputs['mmdb']}"]
    assert update(inputs, *argv) == 0
    assert "175.64.0.0/24" not in networks(inputs["out"])["gwbn"]


def test_soft_list_keeps_unannounced_but_never_foreign_space(inputs, capsys):
    """--keep-unannounced keeps space no BGP view shows, still drops foreign-announced space,
    and says so in the report and the table header."""
    assert update(inputs, "--routed", f"mmdb:{inputs['mmdb']}", "--keep-unannounced") == 0
    assert networks(inputs["out"])["chinamobile"] == {"175.64.0.0/16"}
    assert "(kept (soft))" in capsys.readouterr().out
    head = read_table_texts(inputs["out"])["chinamobile"] or ""
    assert "unannounced space kept (--keep-unannounced)" in head


def test_soft_list_needs_a_filter(inputs, capsys):
    """--keep-unannounced alone would mean nothing; it is an error, not silently ignored."""
    assert update(inputs, "--keep-unannounced") == 2
    assert "needs a routing filter" in capsys.readouterr().err


# --- the shrink guard across the filter's introduction -------------------------------------


def test_first_filtered_build_is_judged_against_old_tables_cut_by_the_filter(inputs, capsys):
    """Old unfiltered tables: the filter's own cut (all of chinamobile here) passes without
    --force because the guard's baseline is the old tables cut by the same filter."""
    assert update(inputs) == 0
    assert "175.64.0.0/16" in networks(inputs["out"])["chinamobile"]
    capsys.readouterr()
    assert update(inputs, "--routed", f"mmdb:{inputs['mmdb']}") == 0
    out = capsys.readouterr().out
    assert "guard: the tables in place were built without a routing filter" in out
    assert "refused" not in out


def test_guard_still_catches_a_damaged_input_after_the_filter(inputs, tmp_path, capsys):
    """Once the tables are filtered, a later build that loses > 10 % (here: a truncated CSV,
    or an mmdb with half of Telecom's space missing) is refused as before."""
    assert update(inputs, "--routed", f"mmdb:{inputs['mmdb']}") == 0
    before = read_table_texts(inputs["out"])
    half = [("36.0.0.0/17", "CN") if c == "36.0.0.0/16" else (c, k) for c, k in ROUTED]
    damaged = write_mmdb(tmp_path / "half.mmdb", half)
    capsys.readouterr()
    assert update(inputs, "--routed", f"mmdb:{damaged}") == 1
    out = capsys.readouterr().out
    assert "refused: chinatelecom: IPv4 would lose 50.0% of its addresses" in out
    assert "guard: the tables in place" not in out
    assert read_table_texts(inputs["out"]) == before


# --- interval arithmetic ----------------------------------------------------------------------

intervals = st.lists(
    st.tuples(st.integers(0, 200), st.integers(0, 30)).map(lambda t: (t[0], t[0] + t[1])),
    max_size=12,
)


def _points(ranges):
    return {x for a, b in ranges for x in range(a, b + 1)}


@given(intervals, intervals)
def test_interval_operations_match_set_arithmetic(a, b):
    """merge / intersect / subtract agree with Python sets and keep results merged."""
    ma, mb = merge_intervals(a), merge_intervals(b)
    assert _points(ma) == _points(a)
    assert all(x[1] + 1 < y[0] for x, y in zip(ma, ma[1:], strict=False))
    both = intersect_intervals(ma, mb)
    assert _points(both) == _points(a) & _points(b)
    assert merge_intervals(both) == both
    rest = subtract_intervals(ma, mb)
    assert _points(rest) == _points(a) - _points(b)
    assert merge_intervals(rest) == rest


# --- the candidate scan -------------------------------------------------------------------------


def test_candidates_lists_unmapped_asns_labelled_as_one_isp(inputs, capsys):
    """An unmapped ASN whose routed CN space ip2region labels 电信 (AS133774, "Fuzhou") is a
    new candidate with its place; a rejected one is shown as judged; an excluded or
    foreign-routed one (AS58453, announced from HK) is not listed; mapped ASNs whose space
    carries no label of theirs are listed for review."""
    argv = [
        "candidates",
        "--asn-csv",
        str(inputs["csv"]),
        "--ip2region",
        str(inputs["xdb"]),
        "--routed",
        f"mmdb:{inputs['mmdb']}",
        "--asns",
        str(inputs["asns"]),
    ]
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    lines = {line.split("\t")[0]: line for line in out.splitlines() if line.startswith("AS")}
    assert lines["AS133774"].split("\t")[1:4] == ["chinatelecom", "100.0%", "256"]
    assert "中国 福建省 福州市 电信 100%" in lines["AS133774"]
    assert lines["AS133774"].endswith("\tNEW")
    assert lines["AS38365"].endswith("rejected: a content company's own network")
    assert "AS58453" not in lines
    assert "chinatelecom: 1 new candidates (256 routed addresses), 1 rejected before (256)" in out
    assert "  AS4134\tmapped chinatelecom\trouted 65,536\tno label" in out


def test_rejected_entries_are_validated(tmp_path):
    """A rejected ASN needs a reason and may not also be mapped: the map stays one truth."""
    path = tmp_path / "asns.yaml"
    path.write_text(ASNS + "  - {asn: 4134, name: Chinanet, reason: duplicate}\n")
    with pytest.raises(SourceError, match=r"rejected\[1\]: AS4134 is listed elsewhere"):
        ASNMap.load(path)
    path.write_text(ASNS.replace(', reason: "a content company\'s own network"', ""))
    with pytest.raises(SourceError, match="needs a reason"):
        ASNMap.load(path)
