"""`cosedge-admin backfill`: hand the edge a list of keys to copy, and watch it go.

    cosedge-admin backfill start BUCKET (--keys FILE | --sitemap URL_OR_FILE | --failed)
                                 [--rate N] [--concurrency N] [--wait] [--json]
    cosedge-admin backfill status BUCKET [JOB] [--wait] [--json]
    cosedge-admin backfill cancel BUCKET [JOB] [--json]
    cosedge-admin backfill list BUCKET

The keys are gathered here, on the operator's side (`keylists`), and sent through the
signed API; the edge copies them (see docs/backfill.md). `--failed` asks the edge for the
bucket's recorded copy failures (`?cosedge-copies`, every page) and sends those keys back.
Without JOB, `status` and `cancel` take the bucket's latest job. On a terminal the
progress is a `rich` bar; otherwise one plain line per look (every `--interval` seconds
with `--wait`). `--json` prints SPEC §12's object. With `--wait`, the exit status says how
the job ended: 0 completed, 1 completed with failures or cancelled.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from edge.admin.keylists import KeyListError, read_keys_file, sitemap_keys

JSON_FIELDS = ("job", "state", "total", "done", "stored", "skipped", "failed", "bytes", "failures")
FINISHED = ("completed", "completed-with-failures", "cancelled")
QUERY = "cosedge-backfill"

# (method, params, body) -> (status, body): a signed call to the bucket, from cli.py.
Api = Callable[[str, dict[str, str], bytes], tuple[int, bytes]]


class BackfillError(Exception):
    """What stops the command, worded for the operator (exit 2, or 1 for the edge's no)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def add_parser(sub: Any) -> None:
    """The `backfill` commands, under `cosedge-admin`'s subparsers."""
    backfill = sub.add_parser("backfill", help="copy a list of keys from the origin (jobs)")
    actions = backfill.add_subparsers(dest="action", required=True)
    start = actions.add_parser("start", help="start a job: the keys of a file or a sitemap")
    start.add_argument("bucket")
    source = start.add_mutually_exclusive_group(required=True)
    source.add_argument("--keys", metavar="FILE", help="one key a line, no leading /, # comments")
    source.add_argument("--sitemap", metavar="URL_OR_FILE", help="sitemap.xml (gz, indexes)")
    source.add_argument(
        "--failed", action="store_true", help="the keys whose copies failed (copy records)"
    )
    start.add_argument("--rate", type=float, help="keys started per second (default: no cap)")
    start.add_argument("--concurrency", type=int, help="copies at once (at most half the slots)")
    for name, about in (("status", "show a job's progress"), ("cancel", "cancel a job")):
        action = actions.add_parser(name, help=about + " (default: the bucket's latest)")
        action.add_argument("bucket")
        action.add_argument("job", nargs="?")
    listing = actions.add_parser("list", help="the bucket's jobs")
    listing.add_argument("bucket")
    for name in ("start", "status", "cancel"):
        parser = actions.choices[name]
        parser.add_argument("--json", action="store_true", help="print the job as JSON")
        if name != "cancel":
            parser.add_argument("--wait", action="store_true", help="follow until it ends")
            parser.add_argument("--interval", type=float, default=2.0, help=argparse.SUPPRESS)


def run(args: argparse.Namespace, api: Api) -> int:
    if args.action == "start":
        keys, source = _failed_keys(api) if args.failed else _gather(args)
        summary = _start(api, keys, source, args)
        if not args.json:
            print(f"{args.bucket}: backfill job {summary['job']} started: {summary['total']} keys")
    elif args.action == "list":
        for job in _call(api, "GET", {QUERY: ""})["jobs"]:
            print(f"{job['job']}\t{job['state']}\t{job['done']}/{job['total']}\t{job['source']}")
        return 0
    else:
        job = args.job or _latest(api)
        if args.action == "cancel":
            summary = _call(api, "DELETE", {QUERY: "", "job": job})
            if args.json:
                return _print_json(summary)
            print(f"{args.bucket}: backfill job {job} {summary['state']} at {_counts(summary)}")
            return 0
        summary = _call(api, "GET", {QUERY: "", "job": job})
    if args.wait:
        summary = _follow(api, summary, args)
    elif not args.json and args.action == "status":
        _show(summary)
    if args.json:
        _print_json(summary)
    elif summary["state"] in FINISHED:
        print(final_summary(summary))
    return 1 if summary["state"] in ("completed-with-failures", "cancelled") and args.wait else 0


def _gather(args: argparse.Namespace) -> tuple[list[str], str]:
    try:
        if args.keys:
            return read_keys_file(args.keys), f"keys {args.keys}"
        found = sitemap_keys(args.sitemap)
    except KeyListError as e:
        raise BackfillError(str(e)) from None
    if found.left_out and not args.json:
        print(f"{len(found.left_out)} URL(s) name no key and are left out", file=sys.stderr)
    return found.keys, f"sitemap {args.sitemap}"


def _failed_keys(api: Api) -> tuple[list[str], str]:
    """The keys of the bucket's recorded copy failures, every page of them."""
    keys: dict[str, None] = {}
    marker: str | None = None
    while True:
        params = {"cosedge-copies": "", "max-keys": "1000"}
        if marker:
            params["marker"] = marker
        page = _call(api, "GET", params)
        if not isinstance(page, dict) or not isinstance(page.get("failures"), list):
            raise BackfillError("the edge's answer is not the copy records' JSON")
        keys.update((str(f["key"]), None) for f in page["failures"])
        marker = page.get("next_marker")
        if not marker:
            break
    if not keys:
        raise BackfillError("the bucket has no recorded copy failures", code=1)
    return list(keys), "failed copies"


def _start(api: Api, keys: list[str], source: str, args: argparse.Namespace) -> dict[str, Any]:
    if args.rate is not None and not args.rate > 0:
        raise BackfillError("--rate must be above 0")
    if args.concurrency is not None and args.concurrency < 1:
        raise BackfillError("--concurrency must be at least 1")
    params = {QUERY: "", "source": source}
    if args.rate is not None:
        params["rate"] = f"{args.rate:g}"
    if args.concurrency is not None:
        params["concurrency"] = str(args.concurrency)
    summary: dict[str, Any] = _call(api, "POST", params, "".join(f"{k}\n" for k in keys).encode())
    return summary


def _call(api: Api, method: str, params: dict[str, str], body: bytes = b"") -> Any:
    status, answer = api(method, params, body)
    if status != 200:
        raise BackfillError(error_text(status, answer), code=1)
    try:
        return json.loads(answer)
    except ValueError:
        raise BackfillError("the edge's answer is not a backfill job's JSON") from None


def error_text(status: int, body: bytes) -> str:
    from edge.api import cosxml

    try:
        root = cosxml.parse(body)
        return f"{status} {root.findtext('Code')}: {root.findtext('Message')}"
    except cosxml.XMLProblem:
        return f"HTTP {status}"


def _latest(api: Api) -> str:
    jobs = _call(api, "GET", {QUERY: ""})["jobs"]
    if not jobs:
        raise BackfillError("the bucket has no backfill jobs", code=1)
    return str(jobs[-1]["job"])


def _print_json(summary: dict[str, Any]) -> int:
    sys.stdout.write(json.dumps({k: summary[k] for k in JSON_FIELDS}, indent=2) + "\n")
    return 0


def human_bytes(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"  # not reached


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def stats(summary: dict[str, Any]) -> str:
    """Bytes, rate, time left and failures by reason: what follows the bar."""
    done, total, elapsed = summary["done"], summary["total"], summary.get("elapsed") or 0.0
    rate = done / elapsed if elapsed > 0 and done else None
    parts = [human_bytes(summary["bytes"])]
    parts.append(f"{rate:.1f} keys/s" if rate else "- keys/s")
    if summary["state"] == "running":
        parts.append(f"{_clock((total - done) / rate)} left" if rate else "-:--:-- left")
    if summary["failed"]:
        reasons = summary.get("reasons") or {}
        parts.append(
            f"{summary['failed']} failed ("
            + "; ".join(f"{r}: {n}" for r, n in sorted(reasons.items()))
            + ")"
        )
    return " · ".join(parts)


def _counts(summary: dict[str, Any]) -> str:
    return (
        f"{summary['done']}/{summary['total']} done: {summary['stored']} stored, "
        f"{summary['skipped']} skipped, {summary['failed']} failed"
    )


def progress_line(summary: dict[str, Any]) -> str:
    """One plain line, for logs and pipes."""
    total = summary["total"] or 1
    percent = 100 * summary["done"] // total
    return f"{summary['job']} {summary['state']} {_counts(summary)} ({percent}%) · " + stats(
        summary
    )


def final_summary(summary: dict[str, Any]) -> str:
    """The closing lines of a finished job; a job with failures says so and lists them."""
    state = summary["state"].replace("-", " ")
    lines = [
        f"backfill {summary['job']} of {summary['bucket']} {state}: {_counts(summary)}, "
        f"{human_bytes(summary['bytes'])} in {_clock(summary.get('elapsed') or 0)}"
    ]
    if summary["failures"]:
        lines.append("failed keys:")
        lines += [f"  {f['key']}\t{f['reason']}" for f in summary["failures"]]
    return "\n".join(lines)


def _bar(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[stats]}"),
        console=console,
    )


def _show(summary: dict[str, Any]) -> None:
    console = Console()
    if not console.is_terminal:
        print(progress_line(summary))
        return
    with _bar(console) as bar:
        bar.add_task(
            summary["job"],
            total=summary["total"] or 1,
            completed=summary["done"],
            stats=stats(summary),
        )


def _follow(api: Api, summary: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Look every `--interval` seconds until the job ends: a live bar on a terminal,
    a plain line per look otherwise (not with --json, which prints only the end)."""
    console = Console(stderr=args.json)
    params = {QUERY: "", "job": summary["job"]}
    if not console.is_terminal:
        while True:
            if not args.json:
                print(progress_line(summary), flush=True)
            if summary["state"] in FINISHED:
                return summary
            time.sleep(args.interval)
            summary = _call(api, "GET", params)
    with _bar(console) as bar:
        task: TaskID = bar.add_task(summary["job"], total=summary["total"] or 1, stats="")
        while True:
            bar.update(task, completed=summary["done"], stats=stats(summary))
            if summary["state"] in FINISHED:
                return summary
            time.sleep(args.interval)
            summary = _call(api, "GET", params)
