"""ISP lookups per second: cosedge's bisect index against netaddr.IPSet, same run.

Both answer "which ISP tables contain this address?" over the bundled tables, for the same
random mix of addresses (half drawn from inside the tables, half anywhere in IPv4, a slice
of IPv6). The machines are shared and noisy, so only the ratio measured here means anything.

    python bench/isp_lookup.py [--count N] [--rounds R]
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from netaddr import IPAddress, IPSet

from edge.isp.index import ISPIndex, address_int, bundled_tables_dir
from edge.isp.table import read_tables


def sample_addresses(index_tables: dict[str, Any], count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    networks = [n for nets in index_tables.values() for n in nets]
    v4 = [n for n in networks if n.version == 4]
    v6 = [n for n in networks if n.version == 6]
    out = []
    for i in range(count):
        kind = i % 10
        if kind < 5:
            n = rng.choice(v4)
            out.append(str(ipaddress.IPv4Address(rng.randint(n.first, n.last))))
        elif kind < 9:
            out.append(str(ipaddress.IPv4Address(rng.getrandbits(32))))
        else:
            n = rng.choice(v6)
            out.append(str(ipaddress.IPv6Address(rng.randint(n.first, n.last))))
    return out


def rate(fn: Callable[[], int], count: int, rounds: int) -> tuple[float, int]:
    best = float("inf")
    hits = 0
    for _ in range(rounds):
        start = time.perf_counter()
        hits = fn()
        best = min(best, time.perf_counter() - start)
    return count / best, hits


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    tables = read_tables(bundled_tables_dir())
    started = time.perf_counter()
    index = ISPIndex.from_tables(tables)
    build_index = time.perf_counter() - started
    started = time.perf_counter()
    ipsets = {isp: IPSet(nets) for isp, nets in tables.items()}
    build_ipset = time.perf_counter() - started
    union = IPSet([n for nets in tables.values() for n in nets])

    texts = sample_addresses(tables, args.count)
    parsed = [address_int(a) for a in texts]  # (version, int): what the miss path holds
    netaddr_parsed = [IPAddress(a) for a in texts]
    lookup_int = index.lookup_int

    def index_parsed() -> int:
        return sum(1 for v, n in parsed if lookup_int(v, n))

    def index_text() -> int:
        return sum(1 for a in texts if index.lookup(a))

    def ipset_parsed() -> int:
        return sum(1 for a in netaddr_parsed if any(a in s for s in ipsets.values()))

    # IPSet is slow: time it on a slice so the run stays short; rates are per lookup.
    slice_n = max(1, args.count // 10)
    netaddr_slice = netaddr_parsed[:slice_n]

    def ipset_slice() -> int:
        return sum(1 for a in netaddr_slice if any(a in s for s in ipsets.values()))

    def union_slice() -> int:
        return sum(1 for a in netaddr_slice if a in union)

    # Alternate the contenders round by round so drifts in machine load hit both.
    results: dict[str, list[float]] = {"index": [], "index_text": [], "ipset": [], "union": []}
    hits = {}
    for _ in range(args.rounds):
        r, hits["index"] = rate(index_parsed, args.count, 1)
        results["index"].append(r)
        r, hits["index_text"] = rate(index_text, args.count, 1)
        results["index_text"].append(r)
        r, _ = rate(ipset_slice, slice_n, 1)
        results["ipset"].append(r)
        r, _ = rate(union_slice, slice_n, 1)
        results["union"].append(r)
    best = {k: max(v) for k, v in results.items()}
    agree = sum(
        1
        for (v, n), a in zip(parsed[:slice_n], netaddr_slice, strict=True)
        if bool(lookup_int(v, n)) == any(a in s for s in ipsets.values())
    )
    print(
        f"tables: {sum(len(n) for n in tables.values())} CIDRs; build index "
        f"{build_index * 1000:.0f} ms, IPSet {build_ipset * 1000:.0f} ms"
    )
    print(
        f"addresses: {args.count} ({hits['index']} in some table); answers agree with "
        f"IPSet on {agree}/{slice_n}"
    )
    print(f"{'contender':<34}{'lookups/s':>14}{'vs IPSet':>10}")
    for name, label in (
        ("index", "index.lookup_int (parsed)"),
        ("index_text", "index.lookup (from text)"),
        ("ipset", "netaddr IPSet per ISP (parsed)"),
        ("union", "netaddr IPSet union, yes/no only"),
    ):
        print(f"{label:<34}{best[name]:>14,.0f}{best[name] / best['ipset']:>9.1f}x")
    print("(the index answers which ISPs, like the per-ISP IPSets; the union only says yes/no)")
    print("goals: >= 1,000,000 lookups/s on parsed addresses; >= 40x IPSet")


if __name__ == "__main__":
    main()
