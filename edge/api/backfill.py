"""Backfill jobs through the signed API: `?cosedge-backfill` on a bucket (SPEC §12).

    POST   /<bucket>/?cosedge-backfill[&rate=N][&concurrency=N][&source=TEXT]
           body: the keys, one a line (UTF-8)        -> the new job
    GET    /<bucket>/?cosedge-backfill               -> {"jobs": [every job of the bucket]}
    GET    /<bucket>/?cosedge-backfill&job=ID        -> the job
    DELETE /<bucket>/?cosedge-backfill&job=ID        -> cancel it; the job

Answers are JSON (SPEC's fields first: job, state, total, done, stored, skipped, failed,
bytes, failures). The process that receives the call only writes or reads the job's files;
the main process's `BackfillRunner` runs the job. The edge takes keys, never URLs: the
operator's side turns a sitemap into keys (`cosedge-admin`), so the only hosts a job makes
the edge contact are the bucket's vetted origins. Every key is validated before the job is
written; a bad one refuses the whole job naming its line.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from twisted.internet.threads import deferToThread
from twisted.web.server import Request

from edge.api import errors
from edge.api.auth import Denied
from edge.api.errors import CosError
from edge.api.replies import run, spooled_body
from edge.api.rules import REDIRECT, OriginRules
from edge.origin.backfill import Locate, Located
from edge.origin.copier import OriginResolver, choose_address
from edge.origin.jobs import JobFiles, JobProblem, JobSpec, new_job_id
from edge.store.keys import InvalidKey, validate_key

QUERY = "cosedge-backfill"
MAX_BACKFILL_BODY = 256 * 1024 * 1024  # about three million keys of typical length
NO_SUCH_JOB = CosError("NoSuchBackfillJob", 404, "The specified backfill job does not exist.")


def origin_locator(rules: OriginRules, resolver: OriginResolver) -> Locate:
    """Where the runner copies a key from: the bucket's matching Proxy or Mirror rule,
    resolved and vetted exactly as for a miss."""

    async def locate(bucket: str, key: str) -> Located | str:
        rule = rules.match(bucket, key)
        if rule is None:
            return "no origin rule matches the key"
        if rule.origin_type == REDIRECT:  # Proxy and Mirror rules both store what they pull
            return "the key's origin rule only redirects (no copy)"
        resolved = resolver.resolved_now(rule.origin) or await resolver.resolve(rule.origin)
        if not resolved.accepted:
            return f"origin {rule.origin.netloc} has no acceptable address"
        # No client, so a FOLLOW rule asks as a plain-HTTP client's miss would.
        return Located(rule.origin, choose_address(resolved.accepted), rule.plan(key, False))

    return locate


class BackfillOperations:
    """`?cosedge-backfill` of a bucket the dispatcher found registered."""

    def __init__(self, files: JobFiles | None) -> None:
        self._files = files

    def render(self, request: Request, bucket: str, query: Mapping[str, str]) -> bytes | int:
        if self._files is None:
            raise Denied(errors.NOT_IMPLEMENTED, "this edge runs no backfill jobs")
        method = request.method
        if method == b"POST":
            return run(request, self._start(request, bucket, query))
        if method == b"GET":
            job = query.get("job")
            if job is None:
                return run(request, self._list(request, bucket))
            return run(request, self._show(request, bucket, job))
        if method == b"DELETE":
            return run(request, self._cancel(request, bucket, query.get("job", "")))
        raise Denied(errors.METHOD_NOT_ALLOWED)

    async def _start(self, request: Request, bucket: str, query: Mapping[str, str]) -> None:
        assert self._files is not None
        rate = _number(query, "rate", float)
        concurrency = _number(query, "concurrency", int)
        spool = spooled_body(request)
        if spool is None:
            raise Denied(errors.INVALID_ARGUMENT, "the body lists no keys")
        files = self._files
        source = query.get("source", "")[:200]

        def create() -> JobSpec:
            """Read, judge and write the keys (up to 256 MB, and fsyncs): off the reactor."""
            spool.seek(0)
            keys = _keys_of(spool.read())
            now = time.time()
            spec = JobSpec(new_job_id(now), bucket, len(keys), rate, concurrency, now, source)
            files.create(spec, keys)
            return spec

        spec = await deferToThread(create)
        _reply(request, files.summary(spec.job))

    async def _list(self, request: Request, bucket: str) -> None:
        assert self._files is not None
        files = self._files

        def summaries() -> list[dict[str, Any]]:
            jobs = []
            for job in files.job_ids(bucket):
                try:
                    jobs.append(files.summary(job))
                except JobProblem:
                    continue
            return jobs

        _reply(request, {"jobs": await deferToThread(summaries)})

    async def _show(self, request: Request, bucket: str, job: str) -> None:
        _reply(request, self._summary(bucket, job))

    async def _cancel(self, request: Request, bucket: str, job: str) -> None:
        assert self._files is not None
        summary = self._summary(bucket, job)
        if summary["state"] == "running":
            self._files.cancel(job)
            summary["state"] = "cancelled"
        _reply(request, summary)

    def _summary(self, bucket: str, job: str) -> dict[str, Any]:
        assert self._files is not None
        try:
            summary = self._files.summary(job)
        except JobProblem:
            raise Denied(NO_SUCH_JOB) from None
        if summary["bucket"] != bucket:
            raise Denied(NO_SUCH_JOB)  # another bucket's job is not this bucket's to see
        return summary


def _number(query: Mapping[str, str], name: str, kind: type[float] | type[int]) -> Any:
    text = query.get(name)
    if text is None or text == "":
        return None
    try:
        value = kind(text)
    except ValueError:
        raise Denied(errors.INVALID_ARGUMENT, f"{name} must be a number, not {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise Denied(errors.INVALID_ARGUMENT, f"{name} must be above 0")
    return value


def _keys_of(body: bytes) -> list[str]:
    """The body's keys, each validated; blank lines ignored, duplicates kept once."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Denied(errors.INVALID_ARGUMENT, "the keys are not UTF-8") from None
    keys: dict[str, None] = {}
    for number, line in enumerate(text.split("\n"), 1):
        key = line.rstrip("\r")
        if not key:
            continue
        try:
            validate_key(key)
        except InvalidKey as e:
            raise Denied(errors.INVALID_ARGUMENT, f"line {number}: {e}") from None
        keys[key] = None
    if not keys:
        raise Denied(errors.INVALID_ARGUMENT, "the body lists no keys")
    return list(keys)


def _reply(request: Request, answer: Mapping[str, Any]) -> None:
    body = json.dumps(answer, indent=2).encode() + b"\n"
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()
