"""`cosedge-admin refresh BUCKET (KEY... | --prefix P) [--delete-missing] [--json]`.

Asks the edge (signed `POST /<bucket>/?cosedge-refresh`, docs/refresh.md) to refresh keys
from their origin: 304 keeps a copy, 200 replaces it, 404 reports it (deletes it with
`--delete-missing`). A prefix is walked a page at a time (`--page` keys a request) until the
edge says the listing is done. Prints a table (rich's on a terminal, tab-separated
otherwise, for `cut` and `grep`) and a summary; `--json` prints every result instead. Exit
status 0 when no key failed, 1 when one did, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import Any

from edge.admin.client import AdminError, Reply, call, error_text

QUERY = "cosedge-refresh"
ORDER = ("kept", "replaced", "stored", "missing", "deleted", "failed")
TIMEOUT = 600.0  # one page waits on its keys' origin fetches before the answer comes


def add_parser(sub: Any) -> None:
    """The `refresh` command's arguments, under `cosedge-admin`."""
    refresh = sub.add_parser(
        "refresh",
        help="ask the origin again about stored keys: 304 keeps, 200 replaces, 404 reports "
        "(exit 0 no failures, 1 failures, 2 usage error)",
    )
    refresh.add_argument("bucket")
    refresh.add_argument("keys", nargs="*", metavar="KEY", help="keys to refresh")
    refresh.add_argument("--prefix", help="refresh every stored key starting with this")
    refresh.add_argument(
        "--delete-missing", action="store_true", help="delete keys the origin answers 404 for"
    )
    refresh.add_argument("--page", type=int, default=100, help="keys per request (1..1000)")
    refresh.add_argument("--json", action="store_true", help="print every result as JSON")


def run(args: argparse.Namespace, secret_id: str, secret_key: str) -> int:
    """`refresh`: send the keys (or walk the prefix), print the results. Its errors are
    reported here, so the command reads whole in this module."""
    try:
        return _run(args, secret_id, secret_key)
    except AdminError as e:
        print(f"cosedge-admin: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, secret_id: str, secret_key: str) -> int:
    if bool(args.keys) == (args.prefix is not None):
        raise AdminError("refresh takes KEY... or --prefix P (one of them)")
    if not 1 <= args.page <= 1000:
        raise AdminError("--page must be 1..1000")

    def post(params: dict[str, str], body: bytes = b"") -> dict[str, Any]:
        params = {QUERY: "", **params}
        if args.delete_missing:
            params["delete-missing"] = "true"
        reply = call(
            args.endpoint,
            secret_id,
            secret_key,
            "POST",
            args.bucket,
            params,
            body,
            "application/json" if body else None,
            timeout=TIMEOUT,
        )
        return _answer(reply)

    results: list[dict[str, Any]] = []
    if args.prefix is not None:
        marker = ""
        while True:
            params = {"prefix": args.prefix, "max-keys": str(args.page)}
            if marker:
                params["marker"] = marker
            answer = post(params)
            results.extend(answer["results"])
            marker = answer.get("next_marker") or ""
            if not answer.get("truncated") or not marker:
                break
    else:
        for first in range(0, len(args.keys), args.page):
            chunk = args.keys[first : first + args.page]
            results.extend(post({}, json.dumps({"keys": chunk}).encode())["results"])
    counts = Counter(str(r.get("result")) for r in results)
    if args.json:
        summary = {"bucket": args.bucket, "results": results, "counts": dict(counts)}
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        _print_table(results, sys.stdout.isatty())
        print(f"{args.bucket}: {summarize(len(results), counts)}")
    return 1 if counts.get("failed") else 0


def _answer(reply: Reply) -> dict[str, Any]:
    if reply.status != 200:
        raise AdminError(error_text(reply))
    try:
        answer = json.loads(reply.body)
        if not isinstance(answer.get("results"), list):
            raise ValueError
    except (ValueError, AttributeError):
        raise AdminError("the edge's answer is not the refresh's JSON") from None
    return dict(answer)


def summarize(total: int, counts: Counter[str]) -> str:
    """`3 key(s): 1 kept, 1 replaced, 1 missing` (results in a fixed order)."""
    parts = [f"{counts[name]} {name}" for name in ORDER if counts.get(name)]
    return f"{total} key(s)" + (": " + ", ".join(parts) if parts else "")


def detail(result: dict[str, Any]) -> str:
    """What to say of one key beside its result: the reason, or the origin's ETag/size."""
    if result.get("reason") and result.get("result") in ("failed", "missing", "deleted"):
        return str(result["reason"])
    bits = []
    if result.get("etag"):
        bits.append(f"ETag {result['etag']}")
    if result.get("size") is not None and result.get("result") in ("replaced", "stored"):
        bits.append(f"{result['size']} bytes")
    return ", ".join(bits)


def _print_table(results: list[dict[str, Any]], terminal: bool) -> None:
    if not terminal:
        print("key\tresult\tdetail")
        for r in results:
            print(f"{r.get('key')}\t{r.get('result')}\t{detail(r)}")
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    styles = {"failed": "red", "missing": "yellow", "deleted": "yellow", "replaced": "green"}
    table = Table("key", "result", "detail")
    for r in results:
        result = str(r.get("result"))
        # Text, not markup: a key may hold brackets rich would take for styles.
        style = styles.get(result, "")
        table.add_row(Text(str(r.get("key"))), Text(result, style=style), Text(detail(r)))
    Console().print(table)
