"""The bucket root and the service root: what `/` of a bucket, or of the edge, answers.

Anonymous requests get nothing here: listing a bucket or the service is the signed API's,
so they are answered 403 AccessDenied, or 404 NoSuchBucket when the bucket they name is not
served. Signed requests go to the management API; the only bodies it takes at this level
are small XML documents (CreateBucketConfiguration, the bucket's origin rules) and the key
list of a backfill job.
"""

from __future__ import annotations

from twisted.web.server import Request

from edge.api import errors
from edge.api.backfill import MAX_BACKFILL_BODY
from edge.api.backfill import QUERY as BACKFILL
from edge.api.refresh import MAX_BODY as REFRESH_BODY
from edge.api.refresh import QUERY as REFRESH
from edge.web.access import READ_METHODS, TargetResource
from edge.web.bodies import MAX_XML_BODY
from edge.web.replies import error


class ServiceResource(TargetResource):
    """`/` with no bucket named by the Host: the service root (ListBuckets when signed)."""

    def render_anonymous(self, request: Request) -> bytes:
        return error(request, errors.ACCESS_DENIED)


class BucketResource(TargetResource):
    """A bucket's root, whether or not the bucket is served (the API answers for both)."""

    def render_anonymous(self, request: Request) -> bytes:
        if request.method in READ_METHODS and self.target.bucket is None:
            return error(request, errors.NO_SUCH_BUCKET)
        return error(request, errors.ACCESS_DENIED)

    def body_limit(self, method: bytes, query: dict[str, str]) -> int | None:
        # A bucket PUT (CreateBucketConfiguration) and PUT ?origin; a backfill job's keys.
        if method == b"POST" and REFRESH in query:  # the keys of a refresh (JSON)
            return REFRESH_BODY
        if method == b"POST" and BACKFILL in query:
            return MAX_BACKFILL_BODY
        return MAX_XML_BODY if method == b"PUT" else None
