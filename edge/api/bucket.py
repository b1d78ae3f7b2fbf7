"""Bucket operations: PUT, HEAD and DELETE Bucket, GET Bucket (the object listing) and List
Multipart Uploads (GET `?uploads`).

Buckets made here are the API's (`BucketRegistry` keeps a marker for each); a bucket from
the config file can be listed but not deleted. Listings walk the bucket folder in a thread,
so a big bucket does not hold other requests, and refuse a prefix or marker no key could
have rather than walk outside the bucket. `?origin` is a bucket sub-resource with its own
module (`edge.api.origin`); any other sub-resource is 501.
"""

from __future__ import annotations

from collections.abc import Mapping

from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.web.server import Request

from edge.api import cosxml, errors
from edge.api.auth import Denied
from edge.api.buckets import BucketExists, BucketRegistry, marker_record
from edge.api.replies import finish_xml, run
from edge.api.rules import OriginRules
from edge.config import BUCKET_NAME_RE
from edge.store.interface import BucketNotEmpty, ObjectStore
from edge.store.keys import InvalidKey, validate_prefix

log = Logger()

MAX_LIST_KEYS = 1000
_LIST_PARAMS = {"prefix", "delimiter", "marker", "max-keys", "encoding-type"}


class BucketOperations:
    """The bucket-level operations (all but GET Service and `?origin`)."""

    def __init__(
        self,
        registry: BucketRegistry,
        store: ObjectStore,
        rules: OriginRules,
    ) -> None:
        self._registry = registry
        self._store = store
        self._rules = rules

    def render(self, request: Request, bucket: str, query: Mapping[str, str]) -> bytes | int:
        """Route by method; only PUT may name a bucket the edge does not have."""
        method = request.method
        if "uploads" in query and method == b"GET":
            if bucket not in self._registry:
                raise Denied(errors.NO_SUCH_BUCKET)
            return run(request, self._list_uploads(request, bucket, query))
        subresources = [q for q in query if not q.startswith("q-") and q not in _LIST_PARAMS]
        if subresources:
            raise Denied(errors.NOT_IMPLEMENTED, f"?{subresources[0]} is not supported")
        if method == b"PUT":
            return run(request, self._create(request, bucket))
        if bucket not in self._registry:
            raise Denied(errors.NO_SUCH_BUCKET)
        if method == b"HEAD":
            request.setResponseCode(200)
            return b""
        if method == b"DELETE":
            return run(request, self._delete(request, bucket))
        if method == b"GET":
            return run(request, self._list_objects(request, bucket, query))
        raise Denied(errors.METHOD_NOT_ALLOWED)

    async def _create(self, request: Request, bucket: str) -> None:
        if not BUCKET_NAME_RE.fullmatch(bucket):
            raise Denied(errors.INVALID_BUCKET_NAME)
        if bucket in self._registry:
            raise Denied(errors.BUCKET_ALREADY_EXISTS)
        record = marker_record()
        shared = self._registry.shared
        # A cluster: the state bucket decides who made it (create-only), for every node.
        if shared is not None and not await shared.put(
            f"buckets/{bucket}", record, create_only=True
        ):
            raise Denied(errors.BUCKET_ALREADY_EXISTS)
        try:
            # fsyncs: off the reactor
            await deferToThread(self._registry.write_marker, bucket, record)
        except BucketExists:
            if shared is None:  # with one, this node's pull wrote it already: we won
                raise Denied(errors.BUCKET_ALREADY_EXISTS) from None
        self._registry.adopt(bucket)
        await self._store.add_bucket(bucket)
        log.info("Bucket {bucket} created", bucket=bucket)
        request.setHeader(b"content-length", b"0")
        request.finish()

    async def _delete(self, request: Request, bucket: str) -> None:
        if self._registry.is_configured(bucket):
            raise Denied(
                errors.ACCESS_DENIED, "bucket is defined in the config file; remove it there"
            )
        # The store's removal and forgetting the bucket here happen in one reactor turn for
        # the folder store, so no request finds a bucket the store no longer knows.
        empty = await self._store.bucket_is_empty(bucket)
        if not empty:
            raise Denied(errors.BUCKET_NOT_EMPTY)
        try:
            await self._store.remove_bucket(bucket)  # first: it refuses if anything is left
        except BucketNotEmpty:
            raise Denied(errors.BUCKET_NOT_EMPTY) from None
        shared = self._registry.shared
        if shared is not None:
            await shared.delete(f"buckets/{bucket}")
            await shared.delete(f"origin/{bucket}.json")
        await deferToThread(self._registry.remove_marker, bucket)
        self._registry.forget(bucket)
        self._rules.forget(bucket)
        log.info("Bucket {bucket} deleted", bucket=bucket)
        request.setResponseCode(204)
        request.finish()

    async def _list_objects(self, request: Request, bucket: str, query: Mapping[str, str]) -> None:
        """List a bucket; a prefix or marker no key could have (`..` segments, NUL, ...) is
        400 InvalidArgument (see `validate_prefix`), never a walk outside the bucket."""
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter", "")
        marker = query.get("marker", "")
        try:
            validate_prefix(prefix)
            validate_prefix(marker, "marker")
        except InvalidKey as e:
            raise Denied(errors.INVALID_ARGUMENT, str(e)) from None
        encode = query.get("encoding-type", "") == "url"
        if "encoding-type" in query and not (encode or query["encoding-type"] == ""):
            raise Denied(errors.INVALID_ARGUMENT, "encoding-type must be url")
        try:
            max_keys = int(query.get("max-keys", "") or MAX_LIST_KEYS)
        except ValueError:
            raise Denied(errors.INVALID_ARGUMENT, "max-keys must be a number") from None
        if not 0 <= max_keys:
            raise Denied(errors.INVALID_ARGUMENT, "max-keys must not be negative")
        max_keys = min(max_keys, MAX_LIST_KEYS)
        page = await self._store.list_page(bucket, prefix, marker, delimiter, max_keys)

        def out(text: str) -> str:
            return cosxml.listed(text, encode)

        root = cosxml.element("ListBucketResult")
        cosxml.sub(root, "Name", bucket)
        if encode:
            cosxml.sub(root, "EncodingType", "url")
        cosxml.sub(root, "Prefix", out(prefix))
        cosxml.sub(root, "Marker", out(marker))
        cosxml.sub(root, "MaxKeys", max_keys)
        if delimiter:
            cosxml.sub(root, "Delimiter", out(delimiter))
        cosxml.sub(root, "IsTruncated", str(page.truncated).lower())
        if page.truncated and page.next_marker is not None:
            cosxml.sub(root, "NextMarker", out(page.next_marker))
        for entry in page.contents:
            item = cosxml.sub(root, "Contents")
            cosxml.sub(item, "Key", out(entry.key))
            cosxml.sub(item, "LastModified", cosxml.timestamp(entry.mtime))
            cosxml.sub(item, "ETag", f'"{entry.etag}"')
            cosxml.sub(item, "Size", entry.size)
            cosxml.owner(item)
            cosxml.sub(item, "StorageClass", "STANDARD")
        for common in page.common_prefixes:
            cosxml.sub(cosxml.sub(root, "CommonPrefixes"), "Prefix", out(common))
        finish_xml(request, root)

    async def _list_uploads(self, request: Request, bucket: str, query: Mapping[str, str]) -> None:
        encode = query.get("encoding-type", "") == "url"
        prefix = query.get("prefix", "")

        def out(text: str) -> str:
            return cosxml.listed(text, encode)

        root = cosxml.element("ListMultipartUploadsResult")
        cosxml.sub(root, "Bucket", bucket)
        if encode:
            cosxml.sub(root, "Encoding-Type", "url")
        cosxml.sub(root, "Prefix", out(prefix))
        cosxml.sub(root, "MaxUploads", 1000)
        cosxml.sub(root, "IsTruncated", "false")
        uploads = await self._store.uploads.uploads(bucket, prefix)
        for u in uploads:
            upload = cosxml.sub(root, "Upload")
            cosxml.sub(upload, "Key", out(u.key))
            cosxml.sub(upload, "UploadId", u.upload_id)
            cosxml.sub(upload, "StorageClass", "STANDARD")
            cosxml.owner(upload)
            cosxml.sub(upload, "Initiated", cosxml.timestamp(u.initiated))
        finish_xml(request, root)
