"""The ``asn-csv:`` source: announced ranges by origin ASN, mapped to ISPs by `asns.yaml`.

Reads `start,end,asn,org` rows (the npm package `@ip-location-db/asn`) strictly and keeps the
rows of the operators' own ASNs; `ASNMap` is the curated ASN list (mapped, excluded on
purpose, and rejected candidates), shared with `cosedge-isp candidates`, which scans the same
rows for ASNs the list may be missing.
"""

from __future__ import annotations

import csv
import ipaddress
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edge.isp import ISP_NAMES
from edge.isp.measure import count_text
from edge.isp.sources import (
    ROUTING,
    SourceData,
    SourceError,
    SourceSpec,
    file_fingerprint,
    package_version,
)


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
    package = package_version(path)
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
