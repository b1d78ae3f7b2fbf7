"""Writes small ip2region `.xdb` files (structures 2 and 3) for the updater's tests.

Layout as ip2region's maker writes it: a 256-byte header, the 256x256 vector index (start
and end pointers of the segment entries under each leading byte pair), the region strings,
then the sorted segment index.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from pathlib import Path

HEADER = 256
VECTOR = 256 * 256 * 8


def write_xdb(
    path: Path,
    rows: Sequence[tuple[str, str, str]],
    *,
    structure: int = 2,
    ip_version: int = 4,
    created: int = 1_700_000_000,
) -> Path:
    """rows: (first IP, last IP, region string), in address order, not overlapping."""
    width = 4 if ip_version == 4 else 16
    entry_size = 2 * width + 6
    regions: dict[str, int] = {}
    payload = bytearray()
    base = HEADER + VECTOR
    for _, _, region in rows:
        if region not in regions:
            regions[region] = base + len(payload)
            payload += region.encode("utf-8")
    index_start = base + len(payload)
    entries = bytearray()
    vector = bytearray(VECTOR)
    for i, (first_text, last_text, region) in enumerate(rows):
        first = int(ipaddress.ip_address(first_text))
        last = int(ipaddress.ip_address(last_text))
        pointer = index_start + i * entry_size
        if width == 4:
            entries += struct.pack("<II", first, last)
        else:
            entries += first.to_bytes(16, "big") + last.to_bytes(16, "big")
        encoded = region.encode("utf-8")
        entries += struct.pack("<HI", len(encoded), regions[region])
        shift = 8 * width - 16
        for block in range(first >> shift, (last >> shift) + 1):
            slot = block * 8
            if struct.unpack_from("<I", vector, slot)[0] == 0:
                struct.pack_into("<I", vector, slot, pointer)
            struct.pack_into("<I", vector, slot + 4, pointer + entry_size)
    index_end = index_start + (len(rows) - 1) * entry_size
    header = bytearray(HEADER)
    struct.pack_into("<HHIII", header, 0, structure, 1, created, index_start, index_end)
    if structure == 3:
        struct.pack_into("<HH", header, 16, ip_version, 4)
    path.write_bytes(bytes(header) + bytes(vector) + bytes(payload) + bytes(entries))
    return path
