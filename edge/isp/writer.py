"""Writing the four new tables: their headers, a shared generation, and the atomic replace.

Each table's header records what it is, when and how it was built, every source with its
licence and the routing filter, so a table file explains itself; the four files are staged
and renamed into place in one burst under one generation stamp (see `edge.isp.table`), so no
reader ever builds an index from a mix of old and new.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from edge.isp.combine import ISPResult
from edge.isp.measure import count_cidrs, count_text
from edge.isp.routed import FILTER_MARK, RoutedSpace
from edge.isp.sources import SourceData

ISP_TITLES: Mapping[str, str] = {
    "chinatelecom": "China Telecom (中国电信)",
    "chinamobile": "China Mobile (中国移动), China Tietong (中国铁通) included",
    "chinaunicom": "China Unicom (中国联通)",
    "gwbn": "Great Wall Broadband (长城宽带, Dr. Peng / 鹏博士)",
}


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
        f" {v6} IPv6 CIDRs ({count_text(result.final.v6, 6)})"
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
