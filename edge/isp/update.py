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
import sys
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from edge.isp.asncsv import ASNMap
from edge.isp.combine import ISPResult, SpecialSpaceFilter, combine
from edge.isp.guard import Change, compare, guard_baseline, read_current
from edge.isp.index import bundled_tables_dir
from edge.isp.inputs import download, read_source
from edge.isp.measure import count_cidrs, count_text
from edge.isp.routed import RoutedSpace, RoutedSpec, read_routed_mmdb
from edge.isp.sources import ROUTING, SourceData, SourceError, SourceSpec
from edge.isp.table import TableError, format_table
from edge.isp.writer import new_generation, table_header, write_tables_atomically


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
            f" | IPv6 {v6:>5} CIDRs {count_text(change.new.v6, 6)}"
            f" (+{count_text(change.added.v6, 6)} -{count_text(change.removed.v6, 6)})",
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
