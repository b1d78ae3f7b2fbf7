"""`cosedge-isp update`: rebuild the four ISP tables from real data sources.

The question the tables answer is "is this address on one of these four networks inside
mainland China?", so the combination rule, for every ISP, is

    table = routed(ISP)  ∪  (registered(ISP) ∩ routed(any of the four))

where *routed* comes from routing sources (`cidr:` lists, `asn-csv:` rows of the ISPs'
domestic ASNs) and *registered* from ip2region's exact ISP labels in mainland China. Routing
data is what is announced today; registration labels add the space an ISP's customers and
resellers hold inside routed domestic space (Great Wall Broadband lives mostly there) but
never space that none of the four announces. With no routing source at all, the
registration labels stand alone, and the update says so.

With `--routed mmdb:PATH` every table is then cut to space an ASN registered in China
announces in that BGP view (iptoasn.com): the asn-csv fills RouteViews' gaps with RIR
registrations, and registered-but-unannounced space is not a network in use. The cut is
measured per ISP in two parts, space nobody announces and space a foreign ASN announces; with
`--keep-unannounced` the first part stays (a "soft" list: some Chinese space is announced only
inside China, invisible to public route collectors), the second never does.

Safety: every input line is validated; special-purpose space and default routes are dropped
with counts; a table that would lose more than 10 % of its IPv4 or IPv6 addresses is refused
unless `--force`; the four files are replaced as one generation (see `edge.isp.table`). The
shrink guard compares like with like: when the tables in place were built without the
routing filter and this update has one, the baseline is the old tables cut by the same filter,
so the filter's intended cut (printed per ISP) does not need `--force`, while a damaged or
truncated input still trips the guard.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from netaddr import IPAddress, IPNetwork, IPRange, IPSet

from edge.isp import ISP_NAMES
from edge.isp.index import bundled_tables_dir
from edge.isp.intervals import Interval, intersect_intervals, subtract_intervals
from edge.isp.sources import (
    ROUTING,
    ASNMap,
    RoutedSpace,
    RoutedSpec,
    SourceData,
    SourceError,
    SourceSpec,
    count_text,
    fetch_to_file,
    read_routed_mmdb,
    read_source,
    stderr_progress,
)
from edge.isp.special import SPECIAL_RANGES
from edge.isp.table import TableError, format_table, parse_table, read_table_texts

ISP_TITLES: Mapping[str, str] = {
    "chinatelecom": "China Telecom (中国电信)",
    "chinamobile": "China Mobile (中国移动), China Tietong (中国铁通) included",
    "chinaunicom": "China Unicom (中国联通)",
    "gwbn": "Great Wall Broadband (长城宽带, Dr. Peng / 鹏博士)",
}
MAX_SHRINK = 0.10
_ALL = {4: IPSet(["0.0.0.0/0"]), 6: IPSet(["::/0"])}
_OUTSIDE_GLOBAL_V6 = "outside IPv6 global unicast (2000::/3)"


# --- sizes per IP version ---------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    v4: int
    v6: int

    @classmethod
    def of(cls, addresses: IPSet) -> Sizes:
        v4 = v6 = 0
        for cidr in addresses.iter_cidrs():
            if cidr.version == 4:
                v4 += cidr.size
            else:
                v6 += cidr.size
        return cls(v4, v6)

    def __str__(self) -> str:
        return f"IPv4 {self.v4:,} / IPv6 {_v6(self.v6)}"


def _v6(size: int) -> str:
    return count_text(size, 6)


def count_cidrs(addresses: IPSet) -> tuple[int, int]:
    v4 = v6 = 0
    for cidr in addresses.iter_cidrs():
        if cidr.version == 4:
            v4 += 1
        else:
            v6 += 1
    return v4, v6


# --- filtering ---------------------------------------------------------------------------


class SpecialSpaceFilter:
    """Removes special-purpose space and default routes, counting what went and why."""

    def __init__(self) -> None:
        self._labelled = [(IPNetwork(cidr), label) for cidr, label in SPECIAL_RANGES]
        special = IPSet(network for network, _ in self._labelled)
        special |= _ALL[6] - IPSet(["2000::/3"])
        self._special = special
        self.dropped: Counter[tuple[str, int]] = Counter()

    def clean(self, ranges: Iterable[IPRange]) -> IPSet:
        kept: list[IPRange] = []
        for r in ranges:
            if r.first == 0 and r.size == _ALL[r.version].size:
                self.dropped["default route", r.version] += r.size
            else:
                kept.append(r)
        addresses = IPSet(kept)
        overlap = addresses & self._special
        if overlap.size:
            for cidr in overlap.iter_cidrs():
                self.dropped[self._label(cidr), cidr.version] += cidr.size
            addresses -= self._special
        return addresses

    def _label(self, cidr: IPNetwork) -> str:
        for network, label in self._labelled:
            if cidr in network:
                return label
        return _OUTSIDE_GLOBAL_V6


# --- the routing filter --------------------------------------------------------------------

FILTER_MARK = "filter: routed by"


def _intervals(addresses: IPSet, version: int) -> list[Interval]:
    return [(r.first, r.last) for r in addresses.iter_ipranges() if r.version == version]


def _ipset(intervals_by_version: Mapping[int, Sequence[Interval]]) -> IPSet:
    return IPSet(
        IPRange(IPAddress(first, version), IPAddress(last, version))
        for version, intervals in intervals_by_version.items()
        for first, last in intervals
    )


def _size(intervals_by_version: Mapping[int, Sequence[Interval]]) -> Sizes:
    return Sizes(*(sum(b - a + 1 for a, b in intervals_by_version.get(v, ())) for v in (4, 6)))


@dataclass(frozen=True)
class FilterEffect:
    """What the routing filter did to one table."""

    before: Sizes
    unannounced: Sizes  # announced by nobody in the BGP view: cut, or kept if soft
    foreign: Sizes  # announced by an ASN registered outside the country: always cut
    kept_soft: bool
    after: Sizes


def apply_routing_filter(
    table: IPSet, routed: RoutedSpace, keep_unannounced: bool = False
) -> tuple[IPSet, FilterEffect]:
    """table ∩ domestic-routed space (∪ unannounced space when `keep_unannounced`)."""
    kept: dict[int, list[Interval]] = {}
    unannounced: dict[int, list[Interval]] = {}
    foreign: dict[int, list[Interval]] = {}
    for version in (4, 6):
        mine = _intervals(table, version)
        domestic = routed.domestic.get(version, [])
        cut = subtract_intervals(mine, domestic)
        foreign[version] = intersect_intervals(cut, routed.announced.get(version, []))
        unannounced[version] = subtract_intervals(cut, foreign[version])
        kept[version] = intersect_intervals(mine, domestic)
        if keep_unannounced:
            kept[version] = sorted(kept[version] + unannounced[version])
    result = _ipset(kept)
    effect = FilterEffect(
        Sizes.of(table), _size(unannounced), _size(foreign), keep_unannounced, Sizes.of(result)
    )
    return result, effect


# --- combining ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ISPResult:
    """One ISP's new table and the measurements behind it."""

    isp: str
    table: IPSet
    routed: Sizes
    registered: Sizes
    both: Sizes  # routed by the ISP and registered to it: the sources agree
    added_by_registration: Sizes  # registered to it, routed by another of the four
    unrouted_registration: Sizes  # registered to it, routed by none of the four: left out
    final: Sizes
    routing_filter: FilterEffect | None = None


def combine(
    sources: Sequence[SourceData],
    special_filter: SpecialSpaceFilter,
    routing_filter: RoutedSpace | None = None,
    keep_unannounced: bool = False,
) -> dict[str, ISPResult]:
    routed: dict[str, IPSet] = {isp: IPSet() for isp in ISP_NAMES}
    registered: dict[str, IPSet] = {isp: IPSet() for isp in ISP_NAMES}
    for source in sources:
        target = routed if source.role == ROUTING else registered
        for isp, ranges in source.ranges.items():
            target[isp] |= special_filter.clean(ranges)
    have_routing = any(s.role == ROUTING for s in sources)
    routed_any = IPSet()
    for addresses in routed.values():
        routed_any |= addresses
    results: dict[str, ISPResult] = {}
    for isp in ISP_NAMES:
        reg = registered[isp]
        if have_routing:
            kept = reg & routed_any
            table = routed[isp] | kept
            unrouted = reg - routed_any
        else:
            table, kept, unrouted = reg, reg, IPSet()
        effect = None
        if routing_filter is not None:
            table, effect = apply_routing_filter(table, routing_filter, keep_unannounced)
        results[isp] = ISPResult(
            isp=isp,
            table=table,
            routed=Sizes.of(routed[isp]),
            registered=Sizes.of(reg),
            both=Sizes.of(routed[isp] & reg),
            added_by_registration=Sizes.of(kept - routed[isp]),
            unrouted_registration=Sizes.of(unrouted),
            final=Sizes.of(table),
            routing_filter=effect,
        )
    return results


# --- comparing with the tables in place ----------------------------------------------------


@dataclass(frozen=True)
class Change:
    isp: str
    old: Sizes
    added: Sizes
    removed: Sizes
    new: Sizes

    def shrink_problems(self, limit: float = MAX_SHRINK) -> list[str]:
        problems = []
        for version, old, new in ((4, self.old.v4, self.new.v4), (6, self.old.v6, self.new.v6)):
            if old and (old - new) / old > limit:
                lost = (old - new) / old
                problems.append(f"{self.isp}: IPv{version} would lose {lost:.1%} of its addresses")
        return problems


def compare(old_tables: Mapping[str, IPSet], results: Mapping[str, ISPResult]) -> list[Change]:
    changes = []
    for isp, result in results.items():
        old = old_tables.get(isp, IPSet())
        changes.append(
            Change(
                isp,
                Sizes.of(old),
                Sizes.of(result.table - old),
                Sizes.of(old - result.table),
                result.final,
            )
        )
    return changes


@dataclass(frozen=True)
class CurrentTables:
    tables: dict[str, IPSet]
    routing_filtered: bool  # built with a routing filter (their header says so)


def read_current(out: Path) -> CurrentTables:
    """The tables in place, to measure the change; a missing folder means first build."""
    if not out.is_dir():
        return CurrentTables({}, False)
    texts = read_table_texts(out)
    tables = {
        isp: IPSet(parse_table(text or "", str(out / f"{isp}.txt"))) for isp, text in texts.items()
    }
    filtered = any(
        line.startswith("# " + FILTER_MARK)
        for text in texts.values()
        for line in (text or "").splitlines()
        if line.startswith("#")
    )
    return CurrentTables(tables, filtered)


def guard_baseline(
    current: CurrentTables, routed: RoutedSpace | None, keep_unannounced: bool
) -> tuple[dict[str, IPSet], bool]:
    """What the shrink guard compares with, and whether it is the cut-down old tables.

    Old tables from before the routing filter are cut by the new filter first: losing the
    unrouted space is this update's purpose and is printed per ISP, but anything beyond it
    (a truncated CSV, a damaged mmdb on a later run) still counts against the 10 %.
    """
    if routed is None or current.routing_filtered or not current.tables:
        return current.tables, False
    baseline = {
        isp: apply_routing_filter(table, routed, keep_unannounced)[0]
        for isp, table in current.tables.items()
    }
    return baseline, True


# --- writing -----------------------------------------------------------------------------


def new_generation(now: datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(4)


def table_header(
    isp: str,
    result: ISPResult,
    sources: Sequence[SourceData],
    now: datetime,
    routed: RoutedSpace | None = None,
) -> list[str]:
    v4, v6 = count_cidrs(result.table)
    lines = [
        f"cosedge ISP range table: {isp} = {ISP_TITLES[isp]}",
        f"date: {now.strftime('%Y-%m-%d %H:%M:%S UTC')}, written by `cosedge-isp update`",
        "method: routed(ISP) | (registered(ISP) & routed(any of the four));"
        " special-purpose space removed",
    ]
    if routed is not None:
        effect = result.routing_filter
        soft = effect is not None and effect.kept_soft
        lines.append(
            f"{FILTER_MARK} {routed.country} ASNs ({routed.spec.kind}):"
            + (" unannounced space kept (--keep-unannounced)" if soft else " all else removed")
        )
    for source in sources:
        lines.append(f"source: {source.spec.kind} ({source.role}): {source.description}")
        lines.append(f"  licence: {source.licence}")
    if routed is not None:
        lines.append(f"source: {routed.spec.kind} (routing filter): {routed.description}")
        lines.append(f"  licence: {routed.licence}")
    lines.append(
        f"contents: {v4} IPv4 CIDRs ({result.final.v4:,} addresses),"
        f" {v6} IPv6 CIDRs ({_v6(result.final.v6)})"
    )
    return lines


def write_tables_atomically(out: Path, contents: Mapping[str, str], *, fsync: bool = True) -> None:
    """Write every table to a temp file first, then rename them into place in one burst.

    Each rename is atomic; readers compare the files' generation stamps and re-read if they
    catch the burst half-way, so no reader ever uses a mix of old and new tables.
    """
    out.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    try:
        for isp, text in contents.items():
            fd, name = tempfile.mkstemp(prefix=f".{isp}.", suffix=".tmp", dir=out)
            staged.append((Path(name), out / f"{isp}.txt"))
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                if fsync:
                    os.fsync(f.fileno())
            os.chmod(name, 0o644)
        for temp, final in staged:
            os.replace(temp, final)
        staged.clear()
        if fsync:
            dir_fd = os.open(out, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    finally:
        for temp, _ in staged:
            temp.unlink(missing_ok=True)


# --- the command -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cosedge-isp update",
        description="Rebuild the ISP tables (chinatelecom, chinamobile, chinaunicom, gwbn).",
        epilog="Sources: cidr:ISP=PATH_OR_URL (a CIDR list for one ISP), asn-csv:PATH "
        "(start,end,asn,org rows, mapped through --asns), ip2region:PATH (an .xdb file).",
    )
    parser.add_argument(
        "--from",
        dest="sources",
        action="append",
        required=True,
        metavar="SOURCE",
        help="a data source (repeatable)",
    )
    parser.add_argument(
        "--routed",
        metavar="SOURCE",
        help="routing filter, mmdb:PATH (iptoasn-country .mmdb): keep only space announced"
        " by ASNs registered in CN, IPv4 and IPv6",
    )
    parser.add_argument(
        "--keep-unannounced",
        action="store_true",
        help="with --routed: keep space no BGP view shows announced (the soft list);"
        " space announced by a foreign ASN is removed regardless",
    )
    parser.add_argument("--out", metavar="DIR", help="table folder (default: the bundled one)")
    parser.add_argument(
        "--asns", metavar="PATH", help="ASN to ISP map (default: asns.yaml beside the tables)"
    )
    parser.add_argument(
        "--force", action="store_true", help="write even if a table loses more than 10%%"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the summary, write nothing")
    return parser


def download(specs: Sequence[SourceSpec], workdir: Path) -> dict[SourceSpec, Path]:
    """Fetch URL sources with treq on a reactor of their own (the command is synchronous)."""
    urls = [s for s in specs if s.is_url]
    if not urls:
        return {}
    from twisted.internet import defer
    from twisted.internet import reactor as global_reactor

    reactor: Any = global_reactor

    fetched: dict[SourceSpec, Path] = {}
    failures: list[Any] = []

    def start() -> None:
        deferreds = []
        for i, spec in enumerate(urls):
            d = fetch_to_file(
                reactor, spec.location, workdir / f"source-{i}", stderr_progress(spec.location)
            )
            d.addCallback(lambda path, spec=spec: fetched.__setitem__(spec, path))
            deferreds.append(d)
        done = defer.gatherResults(deferreds, consumeErrors=True)
        done.addErrback(lambda f: failures.append(f.value.subFailure.value))
        done.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run(installSignalHandlers=False)
    if failures:
        error = failures[0]
        if isinstance(error, SourceError):
            raise error
        raise SourceError(f"download failed: {error}")
    return fetched


def print_report(
    sources: Sequence[SourceData],
    special_filter: SpecialSpaceFilter,
    results: Mapping[str, ISPResult],
    changes: Sequence[Change],
    out: TextIO,
    routed: RoutedSpace | None = None,
) -> None:
    for source in sources:
        print(f"source {source.spec} [{source.role}]: {source.description}", file=out)
        for note in source.notes:
            print(f"  {note}", file=out)
    if routed is not None:
        print(f"routing filter {routed.spec}: {routed.description}", file=out)
        for note in routed.notes:
            print(f"  {note}", file=out)
    if special_filter.dropped:
        print("dropped (never an origin):", file=out)
        for (label, version), size in sorted(special_filter.dropped.items()):
            print(f"  IPv{version} {label}: {count_text(size, version)}", file=out)
    else:
        print("dropped (never an origin): nothing", file=out)
    print("sources per ISP:", file=out)
    for r in results.values():
        print(f"  {r.isp}: routed {r.routed}; registered {r.registered}", file=out)
        print(
            f"    both sources {r.both}; added from registration {r.added_by_registration};"
            f" registration not routed, left out {r.unrouted_registration}",
            file=out,
        )
    if routed is not None:
        print(f"routing filter (space announced by {routed.country} ASNs):", file=out)
        for r in results.values():
            f = r.routing_filter
            assert f is not None
            unannounced = "kept (soft)" if f.kept_soft else "removed"
            print(
                f"  {r.isp}: before {f.before}; announced by nobody {f.unannounced}"
                f" ({unannounced}); announced by a foreign ASN {f.foreign} (removed);"
                f" after {f.after}",
                file=out,
            )
    print("tables:", file=out)
    for change in changes:
        v4, v6 = count_cidrs(results[change.isp].table)
        print(
            f"  {change.isp:<13} IPv4 {v4:>6} CIDRs {change.new.v4:>12,} addresses"
            f" (+{change.added.v4:,} -{change.removed.v4:,})"
            f" | IPv6 {v6:>5} CIDRs {_v6(change.new.v6)}"
            f" (+{_v6(change.added.v6)} -{_v6(change.removed.v6)})",
            file=out,
        )


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    specs = [SourceSpec.parse(text) for text in args.sources]
    tables_dir = Path(args.out) if args.out else bundled_tables_dir()
    asn_path = Path(args.asns) if args.asns else bundled_tables_dir() / "asns.yaml"
    asn_map = ASNMap.load(asn_path) if any(s.kind == "asn-csv" for s in specs) else None
    routed_spec = RoutedSpec.parse(args.routed) if args.routed else None
    with tempfile.TemporaryDirectory(prefix="cosedge-isp-") as work:
        local = download(specs, Path(work))
        sources = [read_source(s, local.get(s, Path(s.location)), asn_map) for s in specs]
    routed = None
    if routed_spec is not None:
        routed = read_routed_mmdb(routed_spec, Path(routed_spec.location))
    if not any(s.role == ROUTING for s in sources):
        print("warning: no routing source; registration labels are used unrestricted", file=out)
    if args.keep_unannounced and routed is None:
        raise SourceError("--keep-unannounced needs a routing filter (--routed)")
    special_filter = SpecialSpaceFilter()
    results = combine(sources, special_filter, routed, args.keep_unannounced)
    current = read_current(tables_dir)
    changes = compare(current.tables, results)
    print_report(sources, special_filter, results, changes, out, routed)
    for isp, result in results.items():
        if not result.table.size:
            print(f"warning: no source gave any range for {isp}", file=out)
    baseline, cut = guard_baseline(current, routed, args.keep_unannounced)
    if cut:
        print(
            "guard: the tables in place were built without a routing filter; the 10% guard"
            " compares with them cut by this filter",
            file=out,
        )
        changes = compare(baseline, results)
    problems = [p for change in changes for p in change.shrink_problems()]
    if problems and not args.force:
        for problem in problems:
            print(f"refused: {problem} (more than 10%; --force to write anyway)", file=out)
        return 1
    for problem in problems:
        print(f"forced: {problem}", file=out)
    if args.dry_run:
        print(f"dry run: {tables_dir} left as it was", file=out)
        return 0
    now = datetime.now(UTC)
    generation = new_generation(now)
    contents = {
        isp: format_table(
            table_header(isp, result, sources, now, routed),
            result.table.iter_cidrs(),
            generation,
        )
        for isp, result in results.items()
    }
    write_tables_atomically(tables_dir, contents)
    print(f"wrote {len(contents)} tables to {tables_dir} (generation {generation})", file=out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return run(args)
    except (SourceError, TableError) as e:
        print(f"cosedge-isp update: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"cosedge-isp update: {e}", file=sys.stderr)
        return 2
