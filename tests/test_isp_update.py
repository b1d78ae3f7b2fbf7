"""`cosedge-isp update`: sources, exact label mapping, filtering, combining, the shrink guard,
atomic table sets and URL sources, on small synthetic inputs."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.server import Site
from twisted.web.static import File

from edge.isp import ISP_NAMES
from edge.isp.asncsv import ASNMap
from edge.isp.index import ISPIndex
from edge.isp.ip2region import read_ip2region
from edge.isp.sources import SourceError, SourceSpec
from edge.isp.table import TableError, read_table_texts, read_tables, table_generation
from edge.isp.update import main
from edge.isp.writer import write_tables_atomically
from edge.testing.process import twistd_env
from tests.xdb import write_xdb

ASNS = """\
asns:
  - {asn: 4134, isp: chinatelecom, name: "Chinanet"}
  - {asn: 9808, isp: chinamobile, name: "China Mobile"}
  - {asn: 4837, isp: chinaunicom, name: "CHINA UNICOM China169 Backbone"}
  - {asn: 17964, isp: gwbn, name: "Beijing Dian-Xin-Tong Network Technologies Co., Ltd."}
excluded:
  - {asn: 58453, name: "China Mobile International Limited", reason: "overseas"}
"""

CSV = """\
1.0.0.0,1.0.0.255,13335,"Cloudflare, Inc."
36.0.0.0,36.0.255.255,4134,Chinanet
39.128.0.0,39.128.255.255,9808,China Mobile
42.0.0.0,42.0.255.255,58453,China Mobile International Limited
58.16.0.0,58.16.255.255,4837,CHINA UNICOM China169 Backbone
59.108.0.0,59.108.0.255,17964,"Beijing Dian-Xin-Tong Network Technologies Co., Ltd."
240e::,240e:0:ffff:ffff:ffff:ffff:ffff:ffff,4134,Chinanet
2409:8000::,2409:8000:ffff:ffff:ffff:ffff:ffff:ffff,9808,China Mobile
2408:8000::,2408:8000:ffff:ffff:ffff:ffff:ffff:ffff,4837,CHINA UNICOM China169 Backbone
"""

# Registration labels. 36.0.1.0/24 is labelled Great Wall Broadband inside Telecom's routed
# space; 61.0.0.0/24 is labelled 电信 but routed by none of the four.
XDB_ROWS = [
    ("36.0.0.0", "36.0.0.255", "中国|0|广东省|广州市|电信"),
    ("36.0.1.0", "36.0.1.255", "中国|0|北京|北京市|长城宽带"),
    ("36.0.2.0", "36.0.2.255", "中国|0|台湾省|0|中华电信"),
    ("39.128.0.0", "39.128.0.255", "中国|0|香港|0|移动"),
    ("39.128.1.0", "39.128.1.255", "中国|0|湖南省|长沙市|铁通"),
    ("58.16.0.0", "58.16.0.255", "中国|0|北京|北京市|联通"),
    ("58.16.1.0", "58.16.1.255", "中国|0|北京|北京市|鹏博士"),
    ("58.16.2.0", "58.16.2.255", "中国|0|北京|北京市|中国联通"),
    ("61.0.0.0", "61.0.0.255", "中国|0|上海|上海市|电信"),
]


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "asns.yaml").write_text(ASNS, encoding="utf-8")
    (tmp_path / "asn.csv").write_text(CSV, encoding="utf-8")
    write_xdb(tmp_path / "ip2region.xdb", XDB_ROWS)
    return {
        "asns": tmp_path / "asns.yaml",
        "csv": tmp_path / "asn.csv",
        "xdb": tmp_path / "ip2region.xdb",
        "out": tmp_path / "tables",
    }


def update(inputs: dict[str, Path], *sources: str, extra: tuple[str, ...] = ()) -> int:
    argv = [a for s in sources for a in ("--from", s)]
    argv += ["--asns", str(inputs["asns"]), "--out", str(inputs["out"]), *extra]
    return main(argv)


def networks(out: Path) -> dict[str, set[str]]:
    return {isp: {str(n) for n in nets} for isp, nets in read_tables(out).items()}


# --- ip2region ---------------------------------------------------------------------------


def test_ip2region_exact_labels_mainland_only(tmp_path):
    """Exact labels only (中华电信, 中国联通 are not 电信, 联通); Hong Kong / Taiwan rows out;
    铁通 is China Mobile; 长城宽带 and 鹏博士 are Great Wall Broadband."""
    path = write_xdb(tmp_path / "r.xdb", XDB_ROWS)
    data = read_ip2region(SourceSpec("ip2region", str(path)), path)
    got = {isp: sorted(str(r) for r in ranges) for isp, ranges in data.ranges.items()}
    assert got == {
        "chinatelecom": ["36.0.0.0-36.0.0.255", "61.0.0.0-61.0.0.255"],
        "gwbn": ["36.0.1.0-36.0.1.255", "58.16.1.0-58.16.1.255"],
        "chinamobile": ["39.128.1.0-39.128.1.255"],
        "chinaunicom": ["58.16.0.0-58.16.0.255"],
    }
    notes = "\n".join(data.notes)
    assert "left out 香港|移动 (not mainland China): 256 addresses" in notes
    assert "中华电信" not in notes and "中国联通" not in notes


def test_ip2region_structure_3_ipv6(tmp_path):
    """Structure-3 files (IPv6 entries, newer 国家|省份|城市|ISP|代码 layout) are read."""
    path = write_xdb(
        tmp_path / "v6.xdb",
        [
            ("2409:8000::", "2409:8000::ffff", "中国|香港|0|移动|HK"),
            ("2409:8001::", "2409:8001::ffff", "中国|江苏省|南京市|移动|CN"),
            ("240e::", "240e:ff:ffff:ffff:ffff:ffff:ffff:ffff", "中国|广东省|广州市|电信|CN"),
        ],
        structure=3,
        ip_version=6,
    )
    data = read_ip2region(SourceSpec("ip2region", str(path)), path)
    assert [str(r) for r in data.ranges["chinatelecom"]] == [
        "240e::-240e:ff:ffff:ffff:ffff:ffff:ffff:ffff"
    ]
    assert [str(r) for r in data.ranges["chinamobile"]] == ["2409:8001::-2409:8001::ffff"]


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda b: b[:1000], "too short"),
        (lambda b: b"\x07\x00" + b[2:], "unknown xdb structure version 7"),
        (lambda b: b[:8] + (10**9).to_bytes(4, "little") + b[12:], "outside the file"),
    ],
)
def test_ip2region_damaged_file_refused(tmp_path, damage, words):
    """A damaged ip2region xdb file is refused with a SourceError saying what is wrong: a file
    cut to 1000 bytes is too short, structure version 7 is named as unknown, and a segment
    index pointer past the end of the file lies outside the file."""
    path = write_xdb(tmp_path / "r.xdb", XDB_ROWS)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(SourceError, match=words):
        read_ip2region(SourceSpec("ip2region", str(path)), path)


# --- the whole update --------------------------------------------------------------------


def test_update_combines_routing_and_registration(inputs, capsys):
    """table = routed(ISP) | (registered(ISP) & routed(any)): registration adds GWBN's
    space inside Telecom and Unicom routing, never unrouted space; overseas ASNs are out."""
    assert update(inputs, f"asn-csv:{inputs['csv']}", f"ip2region:{inputs['xdb']}") == 0
    tables = networks(inputs["out"])
    assert tables["chinatelecom"] == {"36.0.0.0/16", "240e::/32"}  # 61.0.0.0/24 not routed
    assert tables["chinamobile"] == {"39.128.0.0/16", "2409:8000::/32"}  # not 42.0.0.0/16
    assert tables["chinaunicom"] == {"58.16.0.0/16", "2408:8000::/32"}
    assert tables["gwbn"] == {"59.108.0.0/24", "36.0.1.0/24", "58.16.1.0/24"}
    out = capsys.readouterr().out
    assert "left out AS58453 (China Mobile International Limited: overseas): 65,536" in out
    assert "registration not routed, left out IPv4 256" in out
    index = ISPIndex.from_directory(inputs["out"])
    assert index.lookup("36.0.1.7") == {"chinatelecom", "gwbn"}
    assert index.lookup("61.0.0.1") == frozenset()


def test_tables_carry_header_and_one_generation(inputs):
    """Every table an update writes carries the same generation stamp (none lacks one); the
    chinatelecom table opens with `# cosedge ISP range table: chinatelecom`, has a `# date:`
    line in its first six lines and names the CC BY 4.0 licence."""
    assert update(inputs, f"asn-csv:{inputs['csv']}") == 0
    texts = read_table_texts(inputs["out"])
    generations = {table_generation(t or "") for t in texts.values()}
    assert len(generations) == 1 and None not in generations
    head = (texts["chinatelecom"] or "").splitlines()[:6]
    assert head[0].startswith("# cosedge ISP range table: chinatelecom")
    assert any(line.startswith("# date: ") for line in head)
    assert any("licence: CC BY 4.0" in line for line in (texts["chinatelecom"] or "").splitlines())


def test_cidr_source_with_comments_no_final_newline_and_special_space(inputs, tmp_path, capsys):
    """A plain list: comments and a missing last newline are fine; private, loopback,
    documentation space and a default route are dropped and counted."""
    listing = tmp_path / "chinanet.txt"
    listing.write_text(
        "# chinanet, from BGP\n36.0.0.0/16\n10.0.0.0/8  # private\n127.0.0.0/8\n"
        "0.0.0.0/0\n192.0.2.0/24\n240e::/20\nfe80::/10\n2001:db8::/32\n::/0\n1.2.0.0/16"
    )
    assert update(inputs, f"cidr:chinatelecom={listing}") == 0
    assert networks(inputs["out"])["chinatelecom"] == {"1.2.0.0/16", "36.0.0.0/16", "240e::/20"}
    out = capsys.readouterr().out
    for words in (
        "IPv4 private address: 16,777,216 addresses",
        "IPv4 loopback address: 16,777,216 addresses",
        "IPv4 documentation address: 256 addresses",
        "IPv4 default route: 4,294,967,296 addresses",
        "IPv6 default route: ",
        "IPv6 link-local address: ",
        "IPv6 documentation address: 65,536.0 /48s",
    ):
        assert words in out


@pytest.mark.parametrize(
    "line, words",
    [
        ("36.0.0.0/33", "not a CIDR"),
        ("36.0.0.1/16", "host bits set"),
        ("36.0.0.0", "not a CIDR"),
        ("example.com/24", "not a CIDR"),
    ],
)
def test_bad_cidr_line_stops_the_update_and_writes_nothing(inputs, tmp_path, capsys, line, words):
    """A CIDR list whose second line is not a network (a /33, host bits set, no prefix length,
    a host name) fails the update with exit code 2 and an error naming `FILE:2:` and the
    fault, and no table folder is created."""
    listing = tmp_path / "bad.txt"
    listing.write_text(f"36.0.0.0/16\n{line}\n")
    assert update(inputs, f"cidr:chinatelecom={listing}") == 2
    err = capsys.readouterr().err
    assert f"{listing}:2:" in err and words in err
    assert not inputs["out"].exists()


def test_bad_csv_row_names_file_and_line(inputs, capsys):
    """An ASN CSV row whose range ends before it starts fails the update with exit code 2, and
    stderr names the file, line 10 and the row (`1.2.3.4-1.2.3.0 is not a range`)."""
    inputs["csv"].write_text(CSV + "1.2.3.4,1.2.3.0,4134,Chinanet\n")
    assert update(inputs, f"asn-csv:{inputs['csv']}") == 2
    assert f"{inputs['csv']}:10: 1.2.3.4-1.2.3.0 is not a range" in capsys.readouterr().err


@pytest.mark.parametrize(
    "spec",
    ["cidr:telecom=x.txt", "cidr:chinatelecom", "geoip:x", "nothing"],
)
def test_bad_source_spec(inputs, capsys, spec):
    """A malformed `--from` (an ISP name not among the four, `cidr:` without `=PATH`, an unknown
    kind, no kind at all) ends the update with exit code 2 and a `cosedge-isp update:` error."""
    assert update(inputs, spec) == 2
    assert "cosedge-isp update:" in capsys.readouterr().err


def test_shrink_guard_refuses_then_force_writes(inputs, tmp_path, capsys):
    """Losing more than 10 % of a table's addresses is refused (naming the ISP and IP
    version) and leaves the tables as they were; --force writes."""
    assert update(inputs, f"asn-csv:{inputs['csv']}") == 0
    before = read_table_texts(inputs["out"])
    smaller = tmp_path / "smaller.csv"
    smaller.write_text(CSV.replace("36.0.255.255", "36.0.127.255"))
    capsys.readouterr()
    assert update(inputs, f"asn-csv:{smaller}") == 1
    out = capsys.readouterr().out
    assert "refused: chinatelecom: IPv4 would lose 50.0% of its addresses" in out
    assert "-32,768" in out
    assert read_table_texts(inputs["out"]) == before
    assert update(inputs, f"asn-csv:{smaller}", extra=("--force",)) == 0
    assert networks(inputs["out"])["chinatelecom"] == {"36.0.0.0/17", "240e::/32"}


def test_small_loss_passes_the_guard(inputs, tmp_path):
    """An update that takes 6.25 % of chinatelecom's IPv4 addresses away, less than the shrink
    guard's 10 %, is accepted without --force (exit code 0)."""
    assert update(inputs, f"asn-csv:{inputs['csv']}") == 0
    trimmed = tmp_path / "trimmed.csv"
    trimmed.write_text(CSV.replace("36.0.255.255", "36.0.239.255"))  # -6.25 %
    assert update(inputs, f"asn-csv:{trimmed}") == 0


def test_dry_run_writes_nothing(inputs):
    """`--dry-run` runs the whole update to exit code 0 but creates no table folder."""
    assert update(inputs, f"asn-csv:{inputs['csv']}", extra=("--dry-run",)) == 0
    assert not inputs["out"].exists()


def test_mixed_generations_are_an_error(tmp_path, monkeypatch):
    """Tables from two different updates are never used together."""
    import edge.isp.table as table

    monkeypatch.setattr(table, "_MIXED_RETRIES", 3)
    (tmp_path / "chinatelecom.txt").write_text("# generation: a\n36.0.0.0/16\n")
    (tmp_path / "chinamobile.txt").write_text("# generation: b\n39.128.0.0/16\n")
    with pytest.raises(TableError, match="different updates"):
        read_tables(tmp_path)


def test_readers_never_see_a_mix_while_updates_run(tmp_path):
    """A reader racing a stream of atomic updates always gets one generation's four tables."""
    out = tmp_path / "tables"

    def contents(n: int) -> dict[str, str]:
        return {isp: f"# generation: g{n}\n# n={n}\n" for isp in ISP_NAMES}

    write_tables_atomically(out, contents(0), fsync=False)
    stop = threading.Event()

    def writer() -> None:
        n = 1
        while not stop.is_set():
            write_tables_atomically(out, contents(n), fsync=False)
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(300):
            texts = read_table_texts(out)
            assert len(set(texts.values())) == 1, texts
    finally:
        stop.set()
        thread.join()
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]


def test_asn_map_validation(tmp_path):
    """The ASN map is refused with a SourceError when an entry's isp is not one of the four ISP
    names (the message points at `asns[0]`) and when one ASN is listed twice."""
    path = tmp_path / "asns.yaml"
    path.write_text("asns:\n  - {asn: 4134, isp: chinanet, name: Chinanet}\n")
    with pytest.raises(SourceError, match=r"asns\[0\]: isp must be one of"):
        ASNMap.load(path)
    path.write_text("asns:\n" + "  - {asn: 4134, isp: chinatelecom, name: A}\n" * 2)
    with pytest.raises(SourceError, match="listed twice"):
        ASNMap.load(path)


# --- URL sources, through the real command -------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_url_source_fetched_with_progress(tmp_path):
    """`cidr:ISP=http://...` downloads with treq (progress on stderr) and builds the table;
    a 404 fails the update and writes nothing."""
    served = tmp_path / "served"
    served.mkdir()
    (served / "chinanet.txt").write_text("36.0.0.0/16\n240e::/20\n")
    port = reactor.listenTCP(0, Site(File(str(served))), interface="127.0.0.1")
    try:
        base = f"http://127.0.0.1:{port.getHost().port}"
        out = tmp_path / "tables"

        async def run(url: str) -> tuple[bytes, bytes, int]:
            args = [
                "-m",
                "edge.isp.cli",
                "update",
                "--from",
                f"cidr:chinatelecom={url}",
                "--out",
                str(out),
            ]
            return await getProcessOutputAndValue(
                sys.executable, args, env=twistd_env(), path=str(tmp_path)
            )

        stdout, stderr, code = await run(f"{base}/chinanet.txt")
        assert code == 0, stderr
        assert b"fetching " + f"{base}/chinanet.txt".encode() in stderr
        assert networks(out)["chinatelecom"] == {"36.0.0.0/16", "240e::/20"}
        out_missing = tmp_path / "other"
        out = out_missing
        stdout, stderr, code = await run(f"{base}/missing.txt")
        assert code == 2
        assert b"HTTP 404" in stderr
        assert not out_missing.exists()
    finally:
        await port.stopListening()
