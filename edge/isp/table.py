"""The on-disk table format of SPEC §5, shared by the loader and the updater.

One file per ISP, `<isp>.txt`, one CIDR per line (IPv4 and IPv6), `#` comments, a header
comment naming source, date and licence. Readers and writers both go through this module so
the format is defined once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from netaddr import AddrFormatError, IPNetwork

from edge.isp import ISP_NAMES


@dataclass(frozen=True)
class TableError(Exception):
    """A table line that is not a CIDR: names the file and line so an operator can fix it."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


def parse_table(text: str, source: str) -> list[IPNetwork]:
    """Parse one table's text strictly; a malformed line is an error, never skipped."""
    networks: list[IPNetwork] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if "/" not in line:
            raise TableError(source, number, f"not a CIDR: {line!r}")
        try:
            network = IPNetwork(line)
        except (AddrFormatError, ValueError) as e:
            raise TableError(source, number, f"not a CIDR: {line!r} ({e})") from None
        if network.ip != network.network:
            raise TableError(source, number, f"host bits set in {line!r}")
        networks.append(network)
    return networks


def read_tables(directory: Path) -> dict[str, list[IPNetwork]]:
    """Read every ISP's table from a folder; an ISP without a file has no ranges."""
    tables: dict[str, list[IPNetwork]] = {}
    for isp in ISP_NAMES:
        path = directory / f"{isp}.txt"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            tables[isp] = []
            continue
        tables[isp] = parse_table(text, str(path))
    return tables


def format_table(header: Iterable[str], networks: Iterable[IPNetwork]) -> str:
    """Render a table: `# ` header lines, then IPv4 CIDRs, then IPv6, each sorted."""
    lines = [f"# {h}".rstrip() for h in header]
    ordered = sorted(networks, key=lambda n: (n.version, n.first, n.prefixlen))
    lines.extend(str(n.cidr) for n in ordered)
    return "\n".join(lines) + "\n"
