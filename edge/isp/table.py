"""The on-disk table format of SPEC §5, shared by the loader and the updater.

One file per ISP, `<isp>.txt`, one CIDR per line (IPv4 and IPv6), `#` comments, a header
comment naming source, date and licence. Readers and writers both go through this module so
the format is defined once.

The four files are one data set: the updater stamps each with the same `# generation:` line
and replaces them one after another. A reader that catches the swap half-way sees two
generations and reads again, so nobody ever builds an index from a mix of old and new.
"""

from __future__ import annotations

import re
import time
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
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.reason}"


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


GENERATION_PREFIX = "# generation: "
_GENERATION = re.compile(r"^# generation: (\S+)\s*$", re.MULTILINE)
_MIXED_RETRIES = 50


def table_generation(text: str) -> str | None:
    """The update a table's text came from (None for a hand-written table)."""
    match = _GENERATION.search(text)
    return match.group(1) if match else None


def _read_texts(directory: Path) -> dict[str, str | None]:
    texts: dict[str, str | None] = {}
    for isp in ISP_NAMES:
        try:
            texts[isp] = (directory / f"{isp}.txt").read_text(encoding="utf-8")
        except FileNotFoundError:
            texts[isp] = None
    return texts


def read_table_texts(directory: Path) -> dict[str, str | None]:
    """Each ISP's table text (None when absent), all from one update.

    Tables written by the updater carry a generation; if the files on disk disagree, an
    update is replacing them right now, so read again until they agree. A set that stays
    mixed (files copied by hand from two updates) is an error rather than a silent mix.
    """
    for _ in range(_MIXED_RETRIES):
        texts = _read_texts(directory)
        generations = {
            generation
            for text in texts.values()
            if text is not None and (generation := table_generation(text)) is not None
        }
        if len(generations) <= 1:
            return texts
        time.sleep(0.01)
    raise TableError(
        str(directory), 0, f"tables come from different updates: {sorted(generations)}"
    )


def read_tables(directory: Path) -> dict[str, list[IPNetwork]]:
    """Read every ISP's table from a folder; an ISP without a file has no ranges."""
    texts = read_table_texts(directory)
    return {
        isp: [] if text is None else parse_table(text, str(directory / f"{isp}.txt"))
        for isp, text in texts.items()
    }


def format_table(
    header: Iterable[str], networks: Iterable[IPNetwork], generation: str | None = None
) -> str:
    """Render a table: `# ` header lines, the generation stamp, then IPv4 CIDRs, then IPv6."""
    lines = [f"# {h}".rstrip() for h in header]
    if generation is not None:
        lines.append(GENERATION_PREFIX + generation)
    ordered = sorted(networks, key=lambda n: (n.version, n.first, n.prefixlen))
    lines.extend(str(n.cidr) for n in ordered)
    return "\n".join(lines) + "\n"
