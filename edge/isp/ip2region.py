"""The ``ip2region:`` source: who an address is registered to, from an ip2region `.xdb` file.

Parses the binary xdb format (structure 2, or 3 for IPv4 and IPv6) strictly and maps rows by
exact ISP label within mainland China; the labels, the not-mainland provinces and the segment
iterator are shared with `cosedge-isp candidates`, which compares these registrations with
the ASN rows.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from edge.isp.measure import count_text
from edge.isp.sources import REGISTRATION, SourceData, SourceError, SourceSpec, file_fingerprint

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
