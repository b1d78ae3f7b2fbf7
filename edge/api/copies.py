"""Copy status (SPEC §9): `GET /<key>?cosedge-copy` and `GET /?cosedge-copies`.

Also `GET /?cosedge-copy&request-id=ID`: the copy a miss started, found by the
`x-cos-request-id` it answered with (what an access log or a client's report gives).

What an operator asks after a miss: did the object land, and if not, why and when it is
tried again. The answers are JSON read from the copier's records (`edge.origin.records`),
which every worker process shares, so whichever process answers knows every copy and the
bucket's counters are the whole edge's. The failure list is paged like a COS listing
(`max-keys`, `marker`, `next_marker`), newest failure first. Signed like the rest of the
API, with the same bucket rights; `cosedge-admin copy status` and `copies` speak it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from twisted.web.server import Request

from edge.api import errors
from edge.api.auth import Denied
from edge.origin.records import CopyRecords, record_json

KEY_QUERY = "cosedge-copy"
BUCKET_QUERY = "cosedge-copies"
DEFAULT_MAX_KEYS = 100
MAX_MAX_KEYS = 1000


class CopyStatus:
    """Answers the two status requests from the records (None: an edge without a copier)."""

    def __init__(self, records: CopyRecords | None) -> None:
        self._records = records

    def render_key(self, request: Request, bucket: str, key: str) -> bytes:
        """One key's latest copy: `state` `absent` when no copy of it was ever recorded."""
        _only_get(request)
        record = self._records.status(bucket, key) if self._records is not None else None
        return _json(request, record_json(bucket, key, record))

    def render_request(self, request: Request, bucket: str, query: Mapping[str, str]) -> bytes:
        """The copy the miss with `request-id` started, while it is its key's latest."""
        _only_get(request)
        request_id = query.get("request-id", "")
        if not request_id:
            raise Denied(errors.INVALID_ARGUMENT, "request-id is required (or ask /<key>)")
        record = self._records.by_request(request_id) if self._records is not None else None
        if record is not None and record.bucket != bucket:
            record = None
        answer = record_json(bucket, "", record)
        if record is None:
            answer["key"] = None
        return _json(request, answer)

    def render_bucket(self, request: Request, bucket: str, query: Mapping[str, str]) -> bytes:
        """The bucket's counters, its copies in flight and a page of its failures."""
        _only_get(request)
        limit = _max_keys(query.get("max-keys"))
        marker = query.get("marker") or None
        answer: dict[str, Any] = {
            "bucket": bucket,
            "counters": {},
            "in_flight": [],
            "failures": [],
            "next_marker": None,
        }
        records = self._records
        if records is not None:
            failures, next_marker = records.failures(bucket, marker, limit)
            answer["counters"] = records.counters(bucket)
            answer["in_flight"] = [record_json(bucket, r.key, r) for r in records.in_flight(bucket)]
            answer["failures"] = [record_json(bucket, r.key, r) for r in failures]
            answer["next_marker"] = next_marker
        return _json(request, answer)


def _only_get(request: Request) -> None:
    if request.method not in (b"GET", b"HEAD"):
        raise Denied(errors.METHOD_NOT_ALLOWED)


def _max_keys(text: str | None) -> int:
    if text is None or text == "":
        return DEFAULT_MAX_KEYS
    if not text.isdigit() or not 1 <= int(text) <= MAX_MAX_KEYS:
        raise Denied(errors.INVALID_ARGUMENT, f"max-keys must be 1 to {MAX_MAX_KEYS}")
    return int(text)


def _json(request: Request, answer: Mapping[str, Any]) -> bytes:
    body = json.dumps(answer, indent=2).encode() + b"\n"
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"content-length", b"%d" % len(body))
    return b"" if request.method == b"HEAD" else body
