"""Which addresses the edge may fetch from (SPEC §5).

An origin address passes when it is in `extra_origin_cidrs`, or when it is an ordinary
public address inside one of the four ISPs' tables. Special-purpose space (loopback,
private, link-local, multicast, unspecified, documentation, CGNAT, ...) never passes on the
strength of a table, so a bad or stale table line cannot open the way to internal services.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netaddr import AddrFormatError, IPNetwork, cidr_merge

from edge.isp.index import AnyAddress, ISPIndex, RangeTable, address_int
from edge.isp.special import SPECIAL_RANGES

_V4_MAPPED = (0xFFFF00000000, 0xFFFFFFFFFFFF)
_V4_COMPATIBLE = (0x2, 0xFFFFFFFF)  # ::a.b.c.d (deprecated); ::, ::1 are caught first


@dataclass(frozen=True)
class AddressVerdict:
    """The policy's answer for one address, with the reason an operator will read."""

    address: str
    isps: frozenset[str]
    accepted: bool
    reason: str


class _LabelledRanges:
    """Labelled CIDRs of both IP versions, looked up with the index's range table."""

    def __init__(self, entries: Sequence[tuple[IPNetwork, str]]) -> None:
        by_version: dict[int, dict[str, list[tuple[int, int]]]] = {4: {}, 6: {}}
        for network, label in entries:
            by_version[network.version].setdefault(label, []).append((network.first, network.last))
        self._tables = {version: RangeTable(ranges) for version, ranges in by_version.items()}

    def find(self, version: int, value: int) -> str | None:
        labels = self._tables[version].lookup(value)
        return min(labels) if labels else None


def _parse_cidrs(cidrs: Sequence[str]) -> list[IPNetwork]:
    networks = []
    for cidr in cidrs:
        try:
            networks.append(IPNetwork(str(cidr).strip()).cidr)
        except (AddrFormatError, ValueError, TypeError):
            raise ValueError(f"not a CIDR: {cidr!r}") from None
    merged: list[Any] = cidr_merge(networks)
    return merged


class OriginAddressPolicy:
    """The ISP index plus the fixed rules; `reload()` swaps in freshly read tables."""

    def __init__(self, tables_dir: Path, extra_cidrs: Sequence[str] = ()) -> None:
        self.tables_dir = Path(tables_dir)
        self._extra = _LabelledRanges(
            [(n, "listed in extra_origin_cidrs") for n in _parse_cidrs(extra_cidrs)]
        )
        self._special = _LabelledRanges([(IPNetwork(c), label) for c, label in SPECIAL_RANGES])
        self._index = ISPIndex.from_directory(self.tables_dir)

    @property
    def index(self) -> ISPIndex:
        return self._index

    def reload(self) -> None:
        """Re-read the tables; on any error the index in force stays and the error rises."""
        self.use_index(self.read_index())

    def read_index(self) -> ISPIndex:
        """Read and parse the tables into a new index, touching nothing the policy uses:
        safe to run in a thread, which is where a SIGHUP reload runs it (a big table takes
        seconds to parse)."""
        return ISPIndex.from_directory(self.tables_dir)

    def use_index(self, index: ISPIndex) -> None:
        """Swap in an index from `read_index`; on the reactor thread, so a lookup sees the
        old index or the new one, never a mix."""
        self._index = index

    def adopt(self, other: OriginAddressPolicy) -> None:
        """Take over another policy's tables and extra CIDRs (a config reload built it in
        a thread); the index is a new object, so cached verdicts are judged again."""
        self.tables_dir = other.tables_dir
        self._extra = other._extra
        self._index = other._index

    def check(self, address: AnyAddress) -> AddressVerdict:
        text = str(address)
        version, value = address_int(address)
        return self._check_int(text, version, value)

    def _check_int(self, text: str, version: int, value: int) -> AddressVerdict:
        extra = self._extra.find(version, value)
        if extra is not None:
            return AddressVerdict(text, self._index.lookup_int(version, value), True, extra)
        if version == 6 and (
            _V4_MAPPED[0] <= value <= _V4_MAPPED[1]
            or _V4_COMPATIBLE[0] <= value <= _V4_COMPATIBLE[1]
        ):
            # An IPv6 spelling of an IPv4 address is judged as that IPv4 address.
            return self._check_int(text, 4, value & 0xFFFFFFFF)
        special = self._special.find(version, value)
        if special is not None:
            return AddressVerdict(text, frozenset(), False, special)
        isps = self._index.lookup_int(version, value)
        if not isps:
            return AddressVerdict(text, isps, False, "not in any ISP table")
        return AddressVerdict(text, isps, True, "in " + ", ".join(sorted(isps)))
