"""The signed management API (SPEC §7): what the COS SDKs and `coscmd` do to a bucket.

Signed requests come in on the same port as the public reads. `EdgeResource` hands every
request that carries a COS signature here; once the signature and the key's bucket rights
check out (`edge.api.auth`), object GET/HEAD go back to the public read path (hits, misses
and back-to-origin behave the same signed or not) and everything else is routed by
`ManagementAPI.render` to the module of its operation family: `service` (GET Service),
`bucket` (bucket PUT/HEAD/DELETE, listings), `object` (object PUT/DELETE), `multipart`,
`origin` (`?origin` rules), `origin_check` (the dry run of a rule), `copies` (copy
status, `?cosedge-copy` and `?cosedge-copies`), `refresh` (asking the origin again about
stored copies) and `backfill` (backfill jobs). This module is only the entry object and
that routing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from twisted.web.server import Request

from edge.api import errors
from edge.api.auth import Authenticator, Denied, query_names, request_headers, request_query
from edge.api.backfill import QUERY as BACKFILL
from edge.api.backfill import BackfillOperations
from edge.api.bucket import BucketOperations
from edge.api.buckets import BucketRegistry
from edge.api.copies import BUCKET_QUERY as COPIES
from edge.api.copies import KEY_QUERY as COPY
from edge.api.copies import CopyStatus
from edge.api.multipart import MultipartOperations, is_multipart
from edge.api.object import ObjectOperations, is_object_subresource, refuse_object_subresource
from edge.api.origin import OriginOperations
from edge.api.origin_check import QUERY as ORIGIN_CHECK
from edge.api.origin_check import OriginCheck
from edge.api.refresh import QUERY as REFRESH
from edge.api.refresh import RefreshOperations
from edge.api.rules import OriginRules
from edge.api.service import ServiceOperations
from edge.config import Credential
from edge.origin.copier import OriginCopier, OriginResolver
from edge.origin.jobs import JobFiles
from edge.store.interface import ObjectStore

__all__ = [
    "COPY",
    "Denied",
    "ManagementAPI",
    "is_object_subresource",
    "query_names",
    "refuse_object_subresource",
    "request_headers",
    "request_query",
]


class ManagementAPI:
    """The API as the web layer sees it: authenticate a signed request, then render it."""

    def __init__(
        self,
        credentials: Sequence[Credential],
        registry: BucketRegistry,
        store: ObjectStore,
        rules: OriginRules,
        resolver: OriginResolver,
        wall_clock: Callable[[], float] = time.time,
        copier: OriginCopier | None = None,
        jobs: JobFiles | None = None,
    ) -> None:
        self._registry = registry
        self._auth = Authenticator(credentials, registry, wall_clock)
        self._service = ServiceOperations(registry, store)
        self._bucket = BucketOperations(registry, store, rules)
        self._object = ObjectOperations(store, copier)
        self._multipart = MultipartOperations(store.uploads)
        self._origin = OriginOperations(rules, resolver, self._domains)
        self._origin_check = OriginCheck(resolver, copier, self._domains)
        self._copies = CopyStatus(copier.records if copier is not None else None)
        self._refresh = RefreshOperations(rules, resolver, store, copier)
        self._backfill = BackfillOperations(jobs)

    def _domains(self, bucket: str) -> tuple[str, ...]:
        """The bucket's own domains: an origin naming one of them would loop."""
        config = self._registry.get(bucket)
        return () if config is None else config.domains

    def set_credentials(self, credentials: Sequence[Credential]) -> None:
        """The key pairs after a config reload; the next request is judged by them."""
        self._auth.set_credentials(credentials)

    def authenticate(self, request: Request, bucket: str | None, key: str | None) -> Credential:
        """Verify the signature; raises `Denied` with COS's error for the failure (see
        `Authenticator.authenticate` for how the signature binds to the bucket)."""
        return self._auth.authenticate(request, bucket, key)

    def render(
        self, request: Request, bucket: str | None, key: str | None, credential: Credential
    ) -> bytes | int:
        """Answer a signed, authenticated request that is not an object read; `credential`
        is the key that signed it (what `authenticate` returned)."""
        query = request_query(request)
        if bucket is None:
            if request.method == b"GET":
                return self._service.list_buckets(request, credential)
            raise Denied(errors.METHOD_NOT_ALLOWED)
        if key is None:
            if ORIGIN_CHECK in query:
                if bucket not in self._registry:
                    raise Denied(errors.NO_SUCH_BUCKET)
                return self._origin_check.render(request, bucket, query)
            if COPY in query:
                if bucket not in self._registry:
                    raise Denied(errors.NO_SUCH_BUCKET)
                return self._copies.render_request(request, bucket, query)
            if COPIES in query:
                if bucket not in self._registry:
                    raise Denied(errors.NO_SUCH_BUCKET)
                return self._copies.render_bucket(request, bucket, query)
            if REFRESH in query:
                if bucket not in self._registry:
                    raise Denied(errors.NO_SUCH_BUCKET)
                return self._refresh.render(request, bucket, query)
            if BACKFILL in query:
                if bucket not in self._registry:
                    raise Denied(errors.NO_SUCH_BUCKET)
                return self._backfill.render(request, bucket, query)
            if "origin" in query:
                if bucket not in self._registry:
                    raise Denied(errors.NO_SUCH_BUCKET)
                return self._origin.render(request, bucket)
            return self._bucket.render(request, bucket, query)
        if bucket not in self._registry:
            raise Denied(errors.NO_SUCH_BUCKET)
        if COPY in query:
            return self._copies.render_key(request, bucket, key)
        if is_multipart(query):
            return self._multipart.render(request, bucket, key, query)
        return self._object.render(request, bucket, key, query)
