"""How big an address set is, in the units the update's report and table headers use.

Operators compare IPv4 space in addresses and IPv6 space in /48 (or /64) networks, and every
figure the update prints (per source, per ISP, per filter step, per table) is one of these;
the sizes live here so the readers, the filters and the writer all count the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from netaddr import IPSet


def count_text(size: int, version: int) -> str:
    """An address count as operators compare them: IPv4 addresses, IPv6 /48 networks."""
    if version == 4:
        return f"{size:,} addresses"
    if size == 0:
        return "0 /48s"
    if size < 2**80:
        return f"{size / 2**64:,.0f} /64s"
    return f"{size / 2**80:,.1f} /48s"


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
