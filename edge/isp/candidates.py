"""`cosedge-isp candidates`: ASNs that `asns.yaml` may be missing, found from the data.

Organisation-name patterns miss operator ASNs whose names in the CSV come from DB-IP and read
like places or postal addresses ("Fuzhou", "Tianjin,300000"). The registration labels do not
depend on those names, so the scan asks the opposite question: which ASNs announce space
that ip2region labels, mostly, as one of the four ISPs?

For every ASN of the asn-csv (IPv4; ip2region's bundled file has no IPv6):

    routed(ASN)  = the ASN's CSV rows ∩ space announced by CN ASNs (the `--routed` mmdb)
    share(ISP)   = |routed(ASN) ∩ registered(ISP)| / |routed(ASN)|

An ASN that is neither mapped nor excluded, holds at least `--min-addresses` of routed space
and has a share above `--share` for one ISP is printed as a candidate, with its CSV name and
its mapped neighbours in the numbering (operators request ASNs in blocks, so a candidate
between two Chinanet ASNs is telling). The output is evidence for a human decision, not a
decision: each candidate still has to be read before it goes into `asns.yaml`.

The second section checks the other direction: mapped ASNs whose routed space ip2region
labels mostly as *another* of the four or as none of them, which is how disagreements such
as AS4847 surface.
"""

from __future__ import annotations

import argparse
import sys
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from edge.isp import ISP_NAMES
from edge.isp.asncsv import ASNMap, iter_asn_csv
from edge.isp.index import bundled_tables_dir
from edge.isp.intervals import Interval, merge_intervals
from edge.isp.ip2region import IP2REGION_LABELS, NOT_MAINLAND, XdbSegment, iter_xdb
from edge.isp.routed import RoutedSpec, read_routed_mmdb
from edge.isp.sources import SourceError


class Coverage:
    """How many integers of a merged interval list lie in [a, b], by bisection."""

    def __init__(self, intervals: Sequence[Interval]) -> None:
        self.starts = [a for a, _ in intervals]
        self.ends = [b for _, b in intervals]
        self.before: list[int] = []  # addresses in the intervals before index i
        total = 0
        for a, b in intervals:
            self.before.append(total)
            total += b - a + 1

    def _upto(self, x: int) -> int:
        i = bisect_right(self.starts, x) - 1
        if i < 0:
            return 0
        return self.before[i] + min(x, self.ends[i]) - self.starts[i] + 1

    def count(self, a: int, b: int) -> int:
        return self._upto(b) - self._upto(a - 1)


@dataclass
class ASNFacts:
    asn: int
    org: str
    routed: int = 0
    by_isp: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ISP_NAMES, 0))
    pieces: list[Interval] = field(default_factory=list)  # routed domestic space

    def share(self, isp: str) -> float:
        return self.by_isp[isp] / self.routed if self.routed else 0.0

    @property
    def best(self) -> tuple[str, float]:
        isp = max(ISP_NAMES, key=lambda name: self.by_isp[name])
        return isp, self.share(isp)


def _clip(a: int, b: int, intervals: Sequence[Interval], ends: Sequence[int]) -> list[Interval]:
    """[a, b] ∩ a merged interval list whose interval ends are `ends`, by bisection."""
    out = []
    i = bisect_left(ends, a)
    while i < len(intervals) and intervals[i][0] <= b:
        out.append((max(a, intervals[i][0]), min(b, intervals[i][1])))
        i += 1
    return out


def scan(
    rows: Sequence[tuple[int, int, int, str]],
    domestic: Sequence[Interval],
    registered: Mapping[str, Sequence[Interval]],
) -> dict[int, ASNFacts]:
    """Per ASN: routed domestic IPv4 space and how much of it each ISP label covers.

    `rows` are (first, last, asn, org) IPv4 CSV rows, each row clipped to `domestic` by
    bisection (one pass over the CSV, not one per ASN); `domestic` and `registered` are
    merged interval lists. Overlapping rows of one ASN would count twice; the CSV has none.
    """
    coverage = {isp: Coverage(registered.get(isp, ())) for isp in ISP_NAMES}
    ends = [b for _, b in domestic]
    facts: dict[int, ASNFacts] = {}
    for first, last, asn, org in rows:
        entry = facts.get(asn)
        if entry is None:
            entry = facts[asn] = ASNFacts(asn, org)
        for a, b in _clip(first, last, domestic, ends):
            entry.pieces.append((a, b))
            entry.routed += b - a + 1
            for isp in ISP_NAMES:
                entry.by_isp[isp] += coverage[isp].count(a, b)
    return {asn: f for asn, f in facts.items() if f.routed}


class Places:
    """ip2region's `province city label` for any range, to say where an ASN's space sits."""

    def __init__(self, segments: Sequence[XdbSegment]) -> None:
        self.segments = segments
        self.ends = [seg.last for seg in segments]

    def top(self, pieces: Sequence[Interval], n: int = 2) -> str:
        total = sum(b - a + 1 for a, b in pieces)
        counts: Counter[str] = Counter()
        for a, b in pieces:
            i = bisect_left(self.ends, a)
            while i < len(self.segments) and self.segments[i].first <= b:
                seg = self.segments[i]
                place = " ".join(
                    part
                    for part in (seg.country, seg.province, seg.city, seg.label)
                    if part and part != "0"
                )
                counts[place] += min(b, seg.last) - max(a, seg.first) + 1
                i += 1
        if not total:
            return "-"
        return ", ".join(f"{place} {size / total:.0%}" for place, size in counts.most_common(n))


def neighbours(asn: int, asn_map: ASNMap, reach: int = 3) -> str:
    """The nearest mapped or excluded ASNs below and above, within `reach` numbers."""
    near = []
    for other in range(asn - reach, asn + reach + 1):
        if other == asn:
            continue
        if other in asn_map.isp_by_asn:
            near.append(f"AS{other}={asn_map.isp_by_asn[other]}")
        elif other in asn_map.excluded:
            near.append(f"AS{other}=excluded")
    return " ".join(near) or "-"


def _shares(f: ASNFacts) -> str:
    return " ".join(f"{isp}={f.share(isp):.0%}" for isp in ISP_NAMES if f.by_isp[isp])


def report(
    facts: Mapping[int, ASNFacts],
    asn_map: ASNMap,
    share: float,
    min_addresses: int,
    out: TextIO,
    places: Places | None = None,
) -> int:
    """Print candidates and disagreements; returns the number of new (unjudged) candidates."""
    candidates = [
        f
        for f in facts.values()
        if f.asn not in asn_map.isp_by_asn
        and f.asn not in asn_map.excluded  # rejected ones stay listed, marked as judged
        and f.routed >= min_addresses
        and f.best[1] > share
    ]
    candidates.sort(
        key=lambda f: (f.asn in asn_map.rejected, ISP_NAMES.index(f.best[0]), -f.routed)
    )
    print(
        f"candidates: ASNs not in asns.yaml with >= {min_addresses:,} routed CN IPv4 addresses,"
        f" > {share:.0%} of them labelled one ISP by ip2region",
        file=out,
    )
    print("asn\tisp\tshare\trouted\tname\tneighbours\twhere (ip2region)\tstatus", file=out)
    totals: dict[tuple[str, bool], list[int]] = {}
    for f in candidates:
        isp, best = f.best
        judged = f.asn in asn_map.rejected
        status = f"rejected: {asn_map.rejected[f.asn]}" if judged else "NEW"
        total = totals.setdefault((isp, judged), [0, 0])
        total[0] += 1
        total[1] += f.routed
        where = places.top(f.pieces) if places else "-"
        print(
            f"AS{f.asn}\t{isp}\t{best:.1%}\t{f.routed:,}\t{f.org}"
            f"\t{neighbours(f.asn, asn_map)}\t{where}\t{status}",
            file=out,
        )
    print("summary:", file=out)
    for isp in ISP_NAMES:
        new, old = totals.get((isp, False), [0, 0]), totals.get((isp, True), [0, 0])
        print(
            f"  {isp}: {new[0]} new candidates ({new[1]:,} routed addresses),"
            f" {old[0]} rejected before ({old[1]:,})",
            file=out,
        )
    print(
        "mapped ASNs whose routed space ip2region labels mostly otherwise"
        " (own ISP <= 50%, >= min addresses):",
        file=out,
    )
    for asn, isp in sorted(asn_map.isp_by_asn.items()):
        mapped = facts.get(asn)
        if mapped is None or mapped.routed < min_addresses or mapped.share(isp) > 0.5:
            continue
        where = places.top(mapped.pieces, 4) if places else "-"
        print(
            f"  AS{asn}\tmapped {isp}\trouted {mapped.routed:,}"
            f"\t{_shares(mapped) or 'no label'}\t{mapped.org}\t{where}",
            file=out,
        )
    return sum(f.asn not in asn_map.rejected for f in candidates)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cosedge-isp candidates",
        description="List ASNs whose routed space ip2region labels mostly as one of the four"
        " ISPs but asns.yaml does not map or exclude (evidence for review, changes nothing).",
    )
    parser.add_argument("--asn-csv", required=True, metavar="PATH", help="asn-ipv4.csv")
    parser.add_argument("--ip2region", required=True, metavar="PATH", help="ip2region .xdb")
    parser.add_argument("--routed", required=True, metavar="SOURCE", help="mmdb:PATH")
    parser.add_argument("--asns", metavar="PATH", help="default: asns.yaml beside the tables")
    parser.add_argument("--share", type=float, default=0.8, help="label share (default 0.8)")
    parser.add_argument(
        "--min-addresses", type=int, default=256, help="routed IPv4 addresses (default 256)"
    )
    return parser


def run(args: argparse.Namespace, out: TextIO) -> int:
    asn_path = Path(args.asns) if args.asns else bundled_tables_dir() / "asns.yaml"
    asn_map = ASNMap.load(asn_path)
    spec = RoutedSpec.parse(args.routed)
    routed = read_routed_mmdb(spec, Path(spec.location))
    header, segments = iter_xdb(Path(args.ip2region))
    if header.ip_version != 4:
        raise SourceError(f"{args.ip2region}: the candidate scan needs an IPv4 xdb file")
    every = list(segments)
    registered: dict[str, list[Interval]] = {isp: [] for isp in ISP_NAMES}
    for seg in every:  # the same rule as the update: exact label, mainland China
        isp = IP2REGION_LABELS.get(seg.label)
        if seg.country == "中国" and isp is not None and seg.province not in NOT_MAINLAND:
            registered[isp].append((seg.first, seg.last))
    registered = {isp: merge_intervals(r) for isp, r in registered.items()}
    rows = [
        (row.first, row.last, row.asn, row.org)
        for row in iter_asn_csv(Path(args.asn_csv))
        if row.version == 4
    ]
    if not rows:
        raise SourceError(f"{args.asn_csv}: no IPv4 rows")
    facts = scan(rows, routed.domestic[4], registered)
    report(facts, asn_map, args.share, args.min_addresses, out, Places(every))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return run(args, sys.stdout)
    except (SourceError, OSError) as e:
        print(f"cosedge-isp candidates: {e}", file=sys.stderr)
        return 2
