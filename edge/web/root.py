"""The root of the public resource tree: which leaf answers a request (SPEC §3).

Host -> bucket -> object: the root reads the raw request target once (`edge.web.target`)
and hands the request to one leaf for it: the service root, a bucket's root, an object, or
a bad target (400 InvalidURI). Twisted's own path traversal is bypassed on purpose: it
would split the path into segments before percent-decoding them, and a key's `%2F` and
`//` must keep their meaning. Each leaf is a `TargetResource` (`edge.web.access`), where
signed and anonymous requests part ways. Nothing here waits on an origin.
"""

from __future__ import annotations

from typing import Any

from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from edge.api import errors
from edge.api.buckets import BucketRegistry
from edge.api.errors import CosError
from edge.api.management import ManagementAPI, request_query
from edge.api.rules import OriginRules
from edge.origin.copier import OriginCopier, OriginResolver
from edge.origin.mirror import MirrorFetches
from edge.store.interface import ObjectStore
from edge.web.access import SignedAccess
from edge.web.bodies import BodyRefused, BodySpool, BodySpools, SpoolBudget, refusal_of
from edge.web.bucket import BucketResource, ServiceResource
from edge.web.hits import Hits
from edge.web.mirror import MirrorReads
from edge.web.misses import Misses
from edge.web.object import ObjectReads, ObjectResource
from edge.web.replies import error
from edge.web.target import BadTarget, Target, target_of


class InvalidTarget(Resource):
    """The leaf for a target no key can match (or none can yet): its error, whoever asks,
    body unread."""

    isLeaf = True

    def __init__(self, cos_error: CosError) -> None:
        super().__init__()
        self._error = cos_error

    def render(self, request: Request) -> bytes:
        refused = refusal_of(request)
        if refused is not None:
            return error(request, refused.error, refused.message)
        return error(request, self._error)

    def body_sink_for(self, request: Request, length: int | None) -> BodySpool:
        raise BodyRefused(self._error)


class LeafRoot(Resource):
    """A root that hands each request to one leaf found from the raw target (`leaf_for`),
    never through Twisted's segment-by-segment traversal (see the module's docstring)."""

    def leaf_for(self, request: Request) -> IResource:
        raise NotImplementedError

    def getChildWithDefault(self, path: bytes, request: Request) -> IResource:
        # `path` is Twisted's decoded first segment: ignored. Every leaf ends the traversal.
        return self.leaf_for(request)

    getChild = getChildWithDefault

    def render(self, request: Request) -> bytes | int:
        # Reached only when Twisted traverses nothing (an empty postpath).
        answer: bytes | int = self.leaf_for(request).render(request)
        return answer


class EdgeResource(LeafRoot):
    """The root: one instance serves all buckets, one leaf per request answers it."""

    def __init__(
        self,
        registry: BucketRegistry,
        rules: OriginRules,
        store: ObjectStore,
        resolver: OriginResolver,
        copier: OriginCopier,
        clock: Any,
        api: ManagementAPI | None = None,
        spools: BodySpools | None = None,
    ) -> None:
        super().__init__()
        if spools is None:
            from edge.config import LimitsConfig

            spools = BodySpools(store.tmp_dir, SpoolBudget(LimitsConfig().spool_bytes))
        self._registry = registry
        self._access = SignedAccess(api, spools)
        hits = Hits()
        mirror = MirrorReads(MirrorFetches(copier), store, hits, clock)
        self._reads = ObjectReads(store, hits, Misses(rules, resolver, copier, clock, mirror))

    def leaf_for(self, request: Request) -> Resource:
        """The resource that answers `request`, from its raw target (Host, path, query)."""
        try:
            target = target_of(request, self._registry)
        except BadTarget as e:
            return InvalidTarget(e.error)
        if target.bucket_name is None:
            return ServiceResource(target, self._access)
        if target.bucket is None and not self._registry.knows_every_bucket():
            # SPEC §8: a new cluster node before its first pull of the shared state cannot
            # tell a bucket made on another node from none; 503, as for a store outage.
            # PUT Bucket alone goes on: the state bucket decides it (create-only).
            if not _creates_bucket(request, target):
                return InvalidTarget(errors.SERVICE_UNAVAILABLE)
        if target.key is None:
            return BucketResource(target, self._access)
        return ObjectResource(target, self._access, self._reads)


def _creates_bucket(request: Request, target: Target) -> bool:
    """A PUT of the bucket itself, no sub-resource (only a query signature's `q-` keys)."""
    if request.method != b"PUT" or target.key is not None:
        return False
    return all(name.startswith("q-") for name in request_query(request))
