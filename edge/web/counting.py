"""What a finished public request counts as in the metrics (SPEC §9), from its status and
what it was: one point for every request, the access-log point in `EdgeSite.log`.

An object read (GET or HEAD of a key, no sub-resource such as `?acl` or `?cosedge-copy`) is
a `hit` when the edge answered it from the store (200, 206, 304), a `redirect` when a miss
was sent to the origin (301, 302, 307), `not_found` on 404 (no origin, or the origin's key
is known missing) and an `error` otherwise (403, 412, 416, 5xx...). Any other request (the
signed management API, uploads, listings, bucket and service calls) counts as `api`, or
`error` when it was refused (4xx/5xx). So hit ratio = hit / (hit + redirect + not_found).
"""

from __future__ import annotations

from typing import Any

from edge.api.management import is_object_subresource, query_names
from edge.metrics.families import NO_BUCKET, UNKNOWN_BUCKET, count_request
from edge.web.object import ObjectResource

_HIT = frozenset({200, 206, 304})
_REDIRECT = frozenset({301, 302, 307})
_READS = frozenset({b"GET", b"HEAD"})


def count_finished(request: Any) -> None:
    """Count `request` (an `EdgeRequest` that has been answered)."""
    handler = request.handler
    target = getattr(handler, "target", None)
    code = request.code
    if target is None:  # a bad target (400), or a request no leaf was found for
        count_request(UNKNOWN_BUCKET, "error", request.sentLength or 0)
        return
    if target.bucket_name is None:
        bucket = NO_BUCKET
    elif target.bucket is None:
        bucket = UNKNOWN_BUCKET
    else:
        bucket = target.bucket_name
    if isinstance(handler, ObjectResource) and request.method in _READS and _plain(request):
        if code in _HIT:
            outcome = "hit"
        elif code in _REDIRECT:
            outcome = "redirect"
        elif code == 404:
            outcome = "not_found"
        else:
            outcome = "error"
    else:
        outcome = "error" if code >= 400 else "api"
    count_request(bucket, outcome, request.sentLength or 0)


def _plain(request: Any) -> bool:
    """No sub-resource: a read of the object itself (a pre-signed URL's query included)."""
    query = request.handler.target.query
    if not query:
        return True
    if query.find(b"cosedge-") >= 0:  # the edge's own status reads (`?cosedge-copy`): API
        return False
    return not is_object_subresource(query_names(request))
