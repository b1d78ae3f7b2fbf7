"""GET Service: the list of buckets a key may manage (`coscmd listbucket`, `list_buckets`).

The one operation addressed to no bucket. It lists only the buckets the signing key is
allowed, not every bucket the edge serves, so a key limited to some buckets learns nothing
of the others.
"""

from __future__ import annotations

from twisted.web.server import Request

from edge.api import cosxml, errors
from edge.api.auth import Denied
from edge.api.buckets import BucketRegistry
from edge.api.replies import xml_reply
from edge.config import Credential
from edge.store.interface import ObjectStore


class ServiceOperations:
    """The service-level operation; reads the registry for names, the store for dates."""

    def __init__(self, registry: BucketRegistry, store: ObjectStore) -> None:
        self._registry = registry
        self._store = store

    def list_buckets(self, request: Request, credential: Credential) -> bytes:
        """GET Service: the buckets this key may manage, not every bucket of the edge."""
        if not self._registry.knows_every_bucket():  # SPEC §8: not an incomplete list
            raise Denied(errors.SERVICE_UNAVAILABLE)
        root = cosxml.element("ListAllMyBucketsResult")
        cosxml.owner(root)
        buckets = cosxml.sub(root, "Buckets")
        for name in self._registry.names():
            if not credential.allows(name):
                continue
            item = cosxml.sub(buckets, "Bucket")
            cosxml.sub(item, "Name", name)
            cosxml.sub(item, "Location", "local")
            created = self._store.bucket_created(name)
            cosxml.sub(item, "CreationDate", cosxml.timestamp(created))
        return xml_reply(request, root)
