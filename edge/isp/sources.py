"""What a data source of `cosedge-isp update` is, and the simplest reader (`cidr:` lists).

Three kinds of source, each read strictly (a malformed line stops the update naming file and
line, so a damaged download can never shrink or poison a table):

- ``cidr:ISP=PATH_OR_URL``: a plain CIDR list for one ISP, as published from BGP dumps (here).
- ``asn-csv:PATH``: `start,end,asn,org` rows (the npm package `@ip-location-db/asn`),
  mapped to ISPs through the ASN list in `asns.yaml` (`edge.isp.asncsv`).
- ``ip2region:PATH``: an ip2region `.xdb` file (structure 2, or 3 for IPv4 and IPv6), mapped
  by exact ISP label within mainland China (`edge.isp.ip2region`).

Routing sources (the first two) say who announces an address; ip2region says who it is
registered to. The updater decides how to combine them; readers only report, each into the
`SourceData` defined here. The routing filter (``--routed mmdb:PATH``) is not per ISP and has
a module of its own, `edge.isp.routed`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from netaddr import IPAddress, IPRange

from edge.isp import ISP_NAMES
from edge.isp.table import TableError, parse_table

ROUTING = "routing"
REGISTRATION = "registration"


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


def file_fingerprint(path: Path) -> str:
    """Name and content hash, so a table header pins down the exact input."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return f"{path.name} sha256:{digest.hexdigest()[:16]}"


def package_version(csv_path: Path) -> str | None:
    """`@ip-location-db/asn` ships its CSVs beside package.json; its version dates the data."""
    try:
        meta = json.loads((csv_path.parent / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(meta, dict) and meta.get("name") and meta.get("version"):
        return f"{meta['name']}@{meta['version']}"
    return None


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
