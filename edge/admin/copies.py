"""`cosedge-admin copy status BUCKET KEY` and `cosedge-admin copies BUCKET [--failed]`.

The copy status API (SPEC §9) for people: did the object land, what is in flight, which
keys failed and why. `--json` prints the edge's JSON for scripts. Exit status: 0 when the
edge answered, 1 when it refused the request (its COS error is printed), 2 for usage
errors or an edge that cannot be reached (`cli.main`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from typing import Any

Call = Callable[[str, dict[str, str], str], Any]  # (bucket, params, key) -> Reply
_PAGE = 1000
_SHOWN_FAILURES = 10


class NotStatusJSON(Exception):
    """The edge answered 200 with something other than the status API's JSON."""


def _json_of(reply: Any) -> dict[str, Any]:
    try:
        answer = json.loads(reply.body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise NotStatusJSON("the edge's answer is not the copy status JSON")
    return answer


def add_parsers(sub: Any) -> None:
    """The `copy` and `copies` sub-commands, on `cosedge-admin`'s parser."""
    copy = sub.add_parser("copy", help="one key's copy from its origin")
    actions = copy.add_subparsers(dest="action", required=True)
    status = actions.add_parser("status", help="did the key's copy land, and if not, why")
    status.add_argument("bucket")
    status.add_argument("key")
    status.add_argument("--json", action="store_true", help="print the edge's JSON answer")
    copies = sub.add_parser("copies", help="a bucket's copies: counters, in flight, failures")
    copies.add_argument("bucket")
    copies.add_argument("--failed", action="store_true", help="list every failed key")
    copies.add_argument("--json", action="store_true", help="print the edge's JSON answer")


def run(args: argparse.Namespace, call: Call, error_text: Callable[[Any], str]) -> int:
    """Answer `copy status` or `copies` through `call` (a signed GET)."""
    if args.area == "copy":
        reply = call(args.bucket, {"cosedge-copy": ""}, args.key)
        if reply.status != 200:
            print(f"cosedge-admin: {error_text(reply)}", file=sys.stderr)
            return 1
        answer = _json_of(reply)
        if args.json:
            sys.stdout.write(json.dumps(answer, indent=2) + "\n")
        else:
            print(describe_copy(answer))
        return 0
    pages: list[dict[str, Any]] = []
    marker: str | None = None
    while True:
        params = {"cosedge-copies": "", "max-keys": str(_PAGE if args.failed else _SHOWN_FAILURES)}
        if marker:
            params["marker"] = marker
        reply = call(args.bucket, params, "")
        if reply.status != 200:
            print(f"cosedge-admin: {error_text(reply)}", file=sys.stderr)
            return 1
        pages.append(_json_of(reply))
        marker = pages[-1].get("next_marker")
        if not args.failed or not marker:
            break
    answer = dict(pages[0])
    if args.failed:
        answer["failures"] = [f for page in pages for f in page.get("failures", [])]
        answer["next_marker"] = None
    if args.json:
        sys.stdout.write(json.dumps(answer, indent=2) + "\n")
    elif args.failed:
        print(describe_failures(answer["failures"]))
    else:
        print(describe_copies(answer))
    return 0


def _bytes(entry: Mapping[str, Any]) -> str:
    expected = entry.get("expected")
    got = entry.get("bytes") or 0
    return f"{got} bytes" if expected is None else f"{got} of {expected} bytes"


def describe_copy(entry: Mapping[str, Any]) -> str:
    """One key's record as a few labelled lines."""
    name = f"{entry.get('bucket')}/{entry.get('key')}"
    state = entry.get("state")
    if state == "absent":
        return f"{name}: absent (no copy recorded: never missed, or the record is gone)"
    lines = [f"{name}: {state}"]
    fields = [
        ("origin", f"{entry.get('origin')} ({entry.get('address')})"),
        ("bytes", _bytes(entry)),
        ("started", entry.get("started")),
        ("finished", entry.get("finished")),
        ("attempts", entry.get("attempts")),
        ("reason", entry.get("reason")),
        ("retry at", entry.get("retry_at")),
        ("request", entry.get("request_id")),
    ]
    lines += [f"  {label:<9} {value}" for label, value in fields if value not in (None, "")]
    return "\n".join(lines)


def describe_failures(failures: list[Mapping[str, Any]]) -> str:
    """Failed keys, newest first: when, key, why, when they may be retried."""
    if not failures:
        return "no failed copies"
    lines = ["finished\tkey\treason\tretry at"]
    for f in failures:
        lines.append(f"{f.get('finished')}\t{f.get('key')}\t{f.get('reason')}\t{f.get('retry_at')}")
    return "\n".join(lines)


def describe_copies(answer: Mapping[str, Any]) -> str:
    """A bucket's counters, its copies in flight and its latest failures."""
    counters = answer.get("counters", {})
    in_flight = answer.get("in_flight", [])
    failures = answer.get("failures", [])
    lines = [
        f"{answer.get('bucket')}: {counters.get('stored', 0)} stored, "
        f"{counters.get('failed', 0)} failed, {len(in_flight)} in flight",
        "counters: " + ", ".join(f"{k} {v}" for k, v in counters.items()),
    ]
    if in_flight:
        lines.append("in flight:")
        lines += [f"  {e.get('state')}\t{e.get('key')}\t{_bytes(e)}" for e in in_flight]
    if failures:
        more = " (--failed lists them all)" if answer.get("next_marker") else ""
        lines.append(f"latest failures{more}:")
        lines += [f"  {f.get('finished')}\t{f.get('key')}\t{f.get('reason')}" for f in failures]
    return "\n".join(lines)
