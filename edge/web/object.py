"""An object: the leaf every request for a key ends at, signed or anonymous.

A GET or HEAD of the object's bytes is answered here, the same way for both: from the store
when it holds the object (`edge.web.hits`), else by the bucket's origin rules
(`edge.web.misses`). Anonymous requests may do nothing else, not even read an object's
sub-resources (`?acl`) or its copy status (`?cosedge-copy`); every other signed request on
a key (PUT, DELETE, multipart, the listing of an upload's parts, the copy status) is the
management API's.
"""

from __future__ import annotations

from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request

from edge.api import errors
from edge.api.management import (
    COPY,
    ManagementAPI,
    is_object_subresource,
    query_names,
    refuse_object_subresource,
    request_query,
)
from edge.config import Credential
from edge.store.interface import ObjectStore, StoredObject, StoreUnavailable
from edge.web.access import READ_METHODS, SignedAccess, TargetResource
from edge.web.bodies import MAX_OBJECT_BODY, MAX_XML_BODY
from edge.web.hits import Hits
from edge.web.misses import Misses
from edge.web.replies import error, unexpected
from edge.web.target import Target
from edge.web.turns import then


class ObjectReads:
    """GET/HEAD of an object, signed or not: a hit is served, a miss goes to its rule."""

    def __init__(self, store: ObjectStore, hits: Hits, misses: Misses) -> None:
        self._store = store
        self._hits = hits
        self._misses = misses

    def read(self, request: Request, target: Target) -> bytes | int:
        if target.bucket is None or target.key is None:
            return error(request, errors.NO_SUCH_BUCKET)
        # The folder store has opened the file (or not) by the time this returns: answered
        # in this turn, without callbacks (`then`).
        d = self._store.open_object(target.bucket.name, target.key, request)
        then(d, self._opened, self._failed, request, target)
        return NOT_DONE_YET

    def _opened(self, obj: StoredObject | None, request: Request, target: Target) -> None:
        if obj is not None:
            self._hits.serve(request, obj)
            return
        self._answer_miss(request, target, copy=True)

    def _answer_miss(self, request: Request, target: Target, copy: bool) -> None:
        answer = self._misses.answer(request, target, copy)
        if isinstance(answer, bytes):  # answered now (an error), not later
            if answer:
                request.write(answer)
            request.finish()

    def _failed(self, failure: Failure, request: Request, target: Target) -> None:
        if failure.check(StoreUnavailable) and not request.startedWriting:
            # SPEC §8: a miss with a known rule still redirects (copying would fail too);
            # everything else the store cannot answer is 503 ServiceUnavailable.
            self._answer_miss(request, target, copy=False)
            return
        unexpected(failure, request, request.request_id)  # type: ignore[attr-defined]


class ObjectResource(TargetResource):
    """One request's key in one bucket (served or not: reads answer NoSuchBucket then)."""

    def __init__(self, target: Target, access: SignedAccess, reads: ObjectReads) -> None:
        super().__init__(target, access)
        self._reads = reads

    def render_anonymous(self, request: Request) -> bytes | int:
        if request.method not in READ_METHODS:
            return error(request, errors.ACCESS_DENIED)
        if self.target.query is not None:
            names = query_names(request)
            if is_object_subresource(names) or COPY in names:
                # `GET /key?acl` asks for the object's ACL, not its bytes: not for
                # anonymous eyes, and no more is the copy status.
                return error(request, errors.ACCESS_DENIED)
        return self._reads.read(request, self.target)

    def render_signed(
        self, request: Request, api: ManagementAPI, credential: Credential
    ) -> bytes | int:
        target = self.target
        listing_parts = target.query is not None and b"uploadid=" in target.query.lower()
        status = target.query is not None and COPY in query_names(request)
        if request.method in READ_METHODS and not listing_parts and not status:
            refuse_object_subresource(request_query(request))
            return self._reads.read(request, target)
        return api.render(request, target.bucket_name, target.key, credential)

    def body_limit(self, method: bytes, query: dict[str, str]) -> int | None:
        if method == b"PUT":
            if "partnumber" in query or not any(not q.startswith("q-") for q in query):
                return MAX_OBJECT_BODY  # an object, or a part of a multipart upload
            return MAX_XML_BODY  # ?acl, ?tagging: answered NotImplemented, small anyway
        if method == b"POST" and ("uploads" in query or "uploadid" in query):
            return MAX_XML_BODY  # initiate, or complete with its list of parts
        return None
