"""Integer interval arithmetic for the updater's large inputs.

netaddr's `IPSet` is right for the tables (a few thousand CIDRs) but slow to build from the
hundreds of thousands of prefixes in a BGP view; the routing filter and the ASN-candidate
scan therefore work on sorted, disjoint `[first, last]` integer ranges of one IP version.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

Interval = tuple[int, int]


def merge_intervals(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, disjoint, non-adjacent [first, last] ranges covering the same integers."""
    merged: list[Interval] = []
    for first, last in sorted(intervals):
        if merged and first <= merged[-1][1] + 1:
            if last > merged[-1][1]:
                merged[-1] = (merged[-1][0], last)
        else:
            merged.append((first, last))
    return merged


def intersect_intervals(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    """a ∩ b, both merged (see `merge_intervals`); one linear pass."""
    out: list[Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        first = max(a[i][0], b[j][0])
        last = min(a[i][1], b[j][1])
        if first <= last:
            out.append((first, last))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def subtract_intervals(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    """a − b, both merged; one linear pass."""
    out: list[Interval] = []
    j = 0
    for first, last in a:
        start = first
        while j < len(b) and b[j][1] < start:
            j += 1
        k = j
        while k < len(b) and b[k][0] <= last:
            if b[k][0] > start:
                out.append((start, b[k][0] - 1))
            start = max(start, b[k][1] + 1)
            if start > last:
                break
            k += 1
        if start <= last:
            out.append((start, last))
    return out


def interval_size(intervals: Iterable[Interval]) -> int:
    return sum(last - first + 1 for first, last in intervals)
