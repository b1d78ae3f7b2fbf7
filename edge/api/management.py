"""The signed management API (SPEC §7): what the COS SDKs and `coscmd` do to a bucket.

Signed requests come in on the same port as the public reads. `EdgeResource` hands every
request that carries a COS signature here; once the signature and the key's bucket rights
check out, object GET/HEAD go back to the public read path (hits, misses and back-to-origin
behave the same signed or not) and everything else is answered here: object PUT/DELETE,
bucket PUT/HEAD/DELETE/list, and origin rules.
"""

from __future__ import annotations

import base64
import binascii
import os
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from xml.etree import ElementTree as ET

from twisted.internet.defer import ensureDeferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET, Request

from edge.api import cosxml, errors, signature
from edge.api.buckets import BucketExists, BucketRegistry, split_host
from edge.api.errors import CosError
from edge.api.headers import is_safe_value, is_token
from edge.api.rules import (
    MalformedRuleXML,
    OriginRule,
    OriginRules,
    RuleError,
    ordered,
    parse_origin_xml,
    render_origin_xml,
)
from edge.config import Credential
from edge.origin.copier import OriginCopier, OriginResolver
from edge.store.folder.multipart import (
    MAX_PARTS,
    MultipartError,
    MultipartUploads,
    UploadInfo,
    parse_complete,
)
from edge.store.folder.store import FolderStore as ObjectStore
from edge.store.folder.writes import UploadSpool
from edge.store.interface import BucketNotEmpty, ObjectMeta
from edge.store.keys import InvalidKey, UnsafePath, validate_prefix

log = Logger()

MAX_LIST_KEYS = 1000
_META_PREFIX = "x-cos-meta-"


class Denied(Exception):
    """A request the API refuses: the COS error to answer, with a specific message."""

    def __init__(self, error: CosError, message: str | None = None) -> None:
        super().__init__(message or error.message)
        self.error = error
        self.message = message


def request_query(request: Request) -> dict[str, str]:
    """Decoded query parameters by lowercased name (last one wins, blank values kept);
    parsed once per request, since the signature check and the operation both need them."""
    cached: dict[str, str] | None = getattr(request, "_cos_query", None)
    if cached is None:
        query = request.uri.partition(b"?")[2].decode("utf-8", "replace")
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, errors="replace")
        cached = {k.lower(): v for k, v in pairs}
        request._cos_query = cached  # type: ignore[attr-defined]
    return cached


def request_headers(request: Request) -> dict[str, str]:
    """Header values by lowercased name (UTF-8, else Latin-1); decoded once per request."""
    cached: dict[str, str] | None = getattr(request, "_cos_headers", None)
    if cached is None:
        cached = {}
        for name, values in request.requestHeaders.getAllRawHeaders():
            raw = values[-1]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            cached[name.decode("latin-1").lower()] = text
        request._cos_headers = cached  # type: ignore[attr-defined]
    return cached


class ManagementAPI:
    def __init__(
        self,
        credentials: Sequence[Credential],
        registry: BucketRegistry,
        store: ObjectStore,
        rules: OriginRules,
        resolver: OriginResolver,
        wall_clock: Callable[[], float] = time.time,
        copier: OriginCopier | None = None,
    ) -> None:
        self._credentials = tuple(credentials)
        self._copier = copier
        self._registry = registry
        self._store = store
        self._rules = rules
        self._resolver = resolver
        self._uploads = MultipartUploads(store)
        self._now = wall_clock

    def set_credentials(self, credentials: Sequence[Credential]) -> None:
        """The key pairs after a config reload; the next request is judged by them."""
        self._credentials = tuple(credentials)

    # -- authentication ----------------------------------------------------------------------

    def authenticate(self, request: Request, bucket: str | None, key: str | None) -> Credential:
        """Verify the signature; raises `Denied` with COS's error for the failure.

        The signature must name the bucket the request addresses: when the Host selects it
        (`<bucket>.cos.<region>.myqcloud.com` or a configured domain), `host` must be signed
        and the path signed is the key, as COS signs; otherwise (path style, `/<bucket>/...`)
        the path signed is the whole path as requested, bucket included. Without this a
        signature captured for one bucket could be replayed against another.
        """
        verified: tuple[str | None, str | None, Credential] | None = getattr(
            request, "_cos_verified", None
        )
        if verified is not None and verified[:2] == (bucket, key):
            # Verified when its headers arrived, before the body was let in: a signature
            # that expires while a large body uploads must not refuse it at the end.
            return verified[2]
        query = request_query(request)
        headers = request_headers(request)
        required: tuple[str, ...] = ()
        if bucket is not None and self._host_bucket(request) == bucket:
            path, required = "/" + (key or ""), ("host",)
        else:
            path = _request_path(request)
        try:
            parts = signature.parse_parts(headers.get("authorization"), query)
            credential = signature.verify(
                parts,
                self._credentials,
                method=request.method.decode("ascii"),
                path=path,
                query=query,
                headers=headers,
                now=self._now(),
                required_headers=required,
            )
        except signature.SignatureProblem as e:
            raise Denied(errors.by_code(e.code), e.message) from None
        if bucket is not None and not credential.allows(bucket):
            raise Denied(errors.ACCESS_DENIED, f"key {credential.secret_id} may not use {bucket}")
        request._cos_verified = (bucket, key, credential)  # type: ignore[attr-defined]
        return credential

    def _host_bucket(self, request: Request) -> str | None:
        """The bucket the Host header selects, by the same rules as `EdgeResource.target`."""
        host = split_host(request.getHeader(b"host"))
        bucket = self._registry.by_domain(host)
        return bucket.name if bucket is not None else self._registry.name_from_api_host(host)

    # -- dispatch ------------------------------------------------------------------------------

    def render(
        self, request: Request, bucket: str | None, key: str | None, credential: Credential
    ) -> bytes | int:
        """Answer a signed, authenticated request that is not an object read; `credential`
        is the key that signed it (what `authenticate` returned)."""
        method = request.method
        query = request_query(request)
        if bucket is None:
            if method == b"GET":
                return self._list_buckets(request, credential)
            raise Denied(errors.METHOD_NOT_ALLOWED)
        if key is None:
            return self._bucket(request, bucket, method, query)
        if bucket not in self._registry:
            raise Denied(errors.NO_SUCH_BUCKET)
        if "uploads" in query or "uploadid" in query or "partnumber" in query:
            return self._multipart(request, bucket, key, method, query)
        refuse_object_subresource(query)
        if method == b"PUT":
            if "x-cos-copy-source" in request_headers(request):
                raise Denied(errors.NOT_IMPLEMENTED, "PUT Object - Copy is not supported")
            return self._async(request, self._put_object(request, bucket, key))
        if method == b"DELETE":
            if self._copier is not None:
                self._copier.drop_queued(bucket, key)  # a copy waiting for a slot: not now
            try:
                self._store.delete_object(bucket, key)
            except UnsafePath as e:
                raise Denied(errors.INVALID_ARGUMENT, str(e)) from None
            log.info("Deleted {bucket}/{key}", bucket=bucket, key=key)
            request.setResponseCode(204)
            return b""
        raise Denied(errors.METHOD_NOT_ALLOWED)

    def _bucket(
        self, request: Request, bucket: str, method: bytes, query: Mapping[str, str]
    ) -> bytes | int:
        if "origin" in query:
            if bucket not in self._registry:
                raise Denied(errors.NO_SUCH_BUCKET)
            if method == b"PUT":
                return self._async(request, self._put_origin(request, bucket))
            if method == b"GET":
                return self._get_origin(request, bucket)
            if method == b"DELETE":
                self._rules.delete(bucket)
                log.info(
                    "Origin rules of {bucket} deleted; rules now from {source}",
                    bucket=bucket,
                    source=self._rules.source(bucket),
                )
                request.setResponseCode(204)
                return b""
            raise Denied(errors.METHOD_NOT_ALLOWED)
        if "uploads" in query and method == b"GET":
            if bucket not in self._registry:
                raise Denied(errors.NO_SUCH_BUCKET)
            return self._async(request, self._list_uploads(request, bucket, query))
        subresources = [q for q in query if not q.startswith("q-") and q not in _LIST_PARAMS]
        if subresources:
            raise Denied(errors.NOT_IMPLEMENTED, f"?{subresources[0]} is not supported")
        if method == b"PUT":
            return self._async(request, self._create_bucket(request, bucket))
        if bucket not in self._registry:
            raise Denied(errors.NO_SUCH_BUCKET)
        if method == b"HEAD":
            request.setResponseCode(200)
            return b""
        if method == b"DELETE":
            return self._async(request, self._delete_bucket(request, bucket))
        if method == b"GET":
            return self._async(request, self._list_objects(request, bucket, query))
        raise Denied(errors.METHOD_NOT_ALLOWED)

    def _async(self, request: Request, coroutine: Any) -> int:
        d = ensureDeferred(coroutine)
        d.addErrback(self._async_failed, request)
        return NOT_DONE_YET

    def _async_failed(self, failure: Any, request: Request) -> None:
        if request.finished or request._disconnected:
            return
        if failure.check(Denied):
            finish_error(request, failure.value.error, failure.value.message)
            return
        request.processingFailed(failure)

    # -- buckets -------------------------------------------------------------------------------

    def _list_buckets(self, request: Request, credential: Credential) -> bytes:
        """GET Service: the buckets this key may manage, not every bucket of the edge."""
        root = cosxml.element("ListAllMyBucketsResult")
        _owner(root)
        buckets = cosxml.sub(root, "Buckets")
        for name in self._registry.names():
            if not credential.allows(name):
                continue
            item = cosxml.sub(buckets, "Bucket")
            cosxml.sub(item, "Name", name)
            cosxml.sub(item, "Location", "local")
            cosxml.sub(item, "CreationDate", _iso(_mtime(self._store.data_dir / name)))
        return _xml(request, root)

    async def _create_bucket(self, request: Request, bucket: str) -> None:
        from edge.config import BUCKET_NAME_RE

        if not BUCKET_NAME_RE.fullmatch(bucket):
            raise Denied(errors.INVALID_BUCKET_NAME)
        if bucket in self._registry:
            raise Denied(errors.BUCKET_ALREADY_EXISTS)
        try:
            await deferToThread(self._registry.write_marker, bucket)  # fsyncs: off the reactor
        except BucketExists:
            raise Denied(errors.BUCKET_ALREADY_EXISTS) from None
        self._registry.adopt(bucket)
        self._store.add_bucket(bucket)
        log.info("Bucket {bucket} created", bucket=bucket)
        request.setHeader(b"content-length", b"0")
        request.finish()

    async def _delete_bucket(self, request: Request, bucket: str) -> None:
        if self._registry.is_configured(bucket):
            raise Denied(
                errors.ACCESS_DENIED, "bucket is defined in the config file; remove it there"
            )
        # The listing walk goes to a thread (a big bucket must not hold other requests);
        # the removal stays here, in one turn with forgetting the bucket, so no request
        # finds a bucket the store no longer knows.
        empty = await deferToThread(self._store.bucket_is_empty, bucket)
        if not empty:
            raise Denied(errors.BUCKET_NOT_EMPTY)
        try:
            self._store.remove_bucket(bucket)  # first: it refuses if anything is left
        except BucketNotEmpty:
            raise Denied(errors.BUCKET_NOT_EMPTY) from None
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
        keys = await deferToThread(lambda: sorted(self._store.iter_keys(bucket, prefix)))
        contents: list[str] = []
        prefixes: list[str] = []
        seen_prefixes: set[str] = set()
        truncated = False
        last = ""
        for key in keys:
            if key <= marker:
                continue
            common = None
            if delimiter:
                cut = key.find(delimiter, len(prefix))
                if cut >= 0:
                    common = key[: cut + len(delimiter)]
            if common is not None and common in seen_prefixes:
                continue
            if common is not None and common <= marker:
                continue
            if len(contents) + len(prefixes) >= max_keys:
                truncated = True
                break
            if common is not None:
                seen_prefixes.add(common)
                prefixes.append(common)
                last = common
            else:
                contents.append(key)
                last = key
        entries = await self._store.describe(bucket, contents)

        def out(text: str) -> str:
            return _listed(text, encode)

        root = cosxml.element("ListBucketResult")
        cosxml.sub(root, "Name", bucket)
        if encode:
            cosxml.sub(root, "EncodingType", "url")
        cosxml.sub(root, "Prefix", out(prefix))
        cosxml.sub(root, "Marker", out(marker))
        cosxml.sub(root, "MaxKeys", max_keys)
        if delimiter:
            cosxml.sub(root, "Delimiter", out(delimiter))
        cosxml.sub(root, "IsTruncated", str(truncated).lower())
        if truncated:
            cosxml.sub(root, "NextMarker", out(last))
        for key, size, mtime, etag in entries:
            item = cosxml.sub(root, "Contents")
            cosxml.sub(item, "Key", out(key))
            cosxml.sub(item, "LastModified", _iso(mtime))
            cosxml.sub(item, "ETag", f'"{etag}"')
            cosxml.sub(item, "Size", size)
            _owner(item)
            cosxml.sub(item, "StorageClass", "STANDARD")
        for common in prefixes:
            cosxml.sub(cosxml.sub(root, "CommonPrefixes"), "Prefix", out(common))
        finish_xml(request, root)

    # -- objects -------------------------------------------------------------------------------

    async def _put_object(self, request: Request, bucket: str, key: str) -> None:
        headers = request_headers(request)
        meta = _meta_from(headers)  # refused before anything is stored
        digest = None
        if "content-md5" in headers:
            try:
                digest = base64.b64decode(headers["content-md5"], validate=True)
            except (binascii.Error, ValueError):
                digest = b""
            if len(digest) != 16:
                raise Denied(errors.INVALID_DIGEST)
        spool = _spooled_body(request)
        # An empty body is not spooled: it becomes an empty object.
        pending = self._store.new_upload(bucket, key, spool)
        try:
            if digest is not None and pending.md5_digest != digest:
                raise Denied(errors.BAD_DIGEST)
            try:
                await pending.publish(replace=True)
            except UnsafePath as e:
                raise Denied(errors.INVALID_ARGUMENT, str(e)) from None
            except (IsADirectoryError, NotADirectoryError, FileExistsError):
                raise Denied(
                    errors.INVALID_ARGUMENT,
                    "the key collides with a folder of other keys (or a key is its folder)",
                ) from None
        except BaseException:
            pending.discard()
            raise
        # fsyncs: off the reactor
        await deferToThread(self._save_meta, bucket, key, meta, pending.identity)
        log.info(
            "Stored {bucket}/{key}: {size} bytes uploaded",
            bucket=bucket,
            key=key,
            size=pending.size,
        )
        request.setHeader(b"etag", b'"%s"' % pending.etag.encode("ascii"))
        request.setHeader(b"content-length", b"0")
        request.finish()

    # -- multipart uploads ---------------------------------------------------------------------

    def _multipart(
        self, request: Request, bucket: str, key: str, method: bytes, query: Mapping[str, str]
    ) -> bytes | int:
        try:
            if method == b"POST" and "uploads" in query:
                meta = _meta_from(request_headers(request))
                return self._async(request, self._initiate(request, bucket, key, meta))
            info = self._uploads.get(query.get("uploadid", ""), bucket, key)
            if method == b"PUT" and "partnumber" in query:
                try:
                    number = int(query["partnumber"])
                except ValueError:
                    raise Denied(errors.INVALID_ARGUMENT, "partNumber must be a number") from None
                etag = self._uploads.put_part(info, number, _spooled_body(request))
                request.setHeader(b"etag", b'"%s"' % etag.encode("ascii"))
                request.setHeader(b"content-length", b"0")
                return b""
            if method == b"POST":
                return self._async(request, self._complete(request, info))
            if method == b"DELETE":
                return self._async(request, self._abort(request, info))
            if method == b"GET":
                return self._async(request, self._list_parts(request, info))
        except MultipartError as e:
            raise Denied(errors.by_code(e.code), e.message) from None
        raise Denied(errors.METHOD_NOT_ALLOWED)

    async def _initiate(self, request: Request, bucket: str, key: str, meta: ObjectMeta) -> None:
        # In a thread: the upload's info.json is flushed to disk with its folder.
        info = await deferToThread(self._uploads.create, bucket, key, meta)
        log.info(
            "Multipart upload {upload_id} of {bucket}/{key} started",
            upload_id=info.upload_id,
            bucket=bucket,
            key=key,
        )
        root = cosxml.element("InitiateMultipartUploadResult")
        cosxml.sub(root, "Bucket", bucket)
        cosxml.sub(root, "Key", key)
        cosxml.sub(root, "UploadId", info.upload_id)
        finish_xml(request, root)

    async def _complete(self, request: Request, info: UploadInfo) -> None:
        assert request.content is not None
        body = request.content.read(_MAX_COMPLETE_BODY + 1)
        try:
            requested = parse_complete(body)
            pending = await deferToThread(self._uploads.assemble, info, requested)
        except MultipartError as e:
            raise Denied(errors.by_code(e.code), e.message) from None
        try:
            await pending.publish(replace=True)
        except UnsafePath as e:
            pending.discard()
            raise Denied(errors.INVALID_ARGUMENT, str(e)) from None
        except (IsADirectoryError, NotADirectoryError, FileExistsError):
            pending.discard()
            raise Denied(errors.INVALID_ARGUMENT, "the key collides with a folder") from None
        except BaseException:
            pending.discard()
            raise
        await deferToThread(self._save_meta, info.bucket, info.key, info.meta, pending.identity)
        await deferToThread(self._uploads.discard, info)  # up to 10,000 part files
        log.info(
            "Stored {bucket}/{key}: {size} bytes from {parts} parts",
            bucket=info.bucket,
            key=info.key,
            size=pending.size,
            parts=len(requested),
        )
        host = (request.getHeader(b"host") or b"").decode("latin-1")
        root = cosxml.element("CompleteMultipartUploadResult")
        cosxml.sub(root, "Location", f"{host}/{info.key}")
        cosxml.sub(root, "Bucket", info.bucket)
        cosxml.sub(root, "Key", info.key)
        cosxml.sub(root, "ETag", f'"{pending.etag}"')
        finish_xml(request, root)

    async def _abort(self, request: Request, info: UploadInfo) -> None:
        await deferToThread(self._uploads.discard, info)  # up to 10,000 part files
        request.setResponseCode(204)
        request.finish()

    async def _list_parts(self, request: Request, info: UploadInfo) -> None:
        parts = await deferToThread(self._uploads.parts, info)  # a stat per part
        root = cosxml.element("ListPartsResult")
        cosxml.sub(root, "Bucket", info.bucket)
        cosxml.sub(root, "Key", info.key)
        cosxml.sub(root, "UploadId", info.upload_id)
        _owner(root)
        cosxml.sub(root, "StorageClass", "STANDARD")
        cosxml.sub(root, "PartNumberMarker", 0)
        cosxml.sub(root, "MaxParts", MAX_PARTS)
        cosxml.sub(root, "IsTruncated", "false")
        for p in parts:
            part = cosxml.sub(root, "Part")
            cosxml.sub(part, "PartNumber", p.number)
            cosxml.sub(part, "LastModified", _iso(p.modified))
            cosxml.sub(part, "ETag", f'"{p.etag}"')
            cosxml.sub(part, "Size", p.size)
        finish_xml(request, root)

    async def _list_uploads(self, request: Request, bucket: str, query: Mapping[str, str]) -> None:
        encode = query.get("encoding-type", "") == "url"
        prefix = query.get("prefix", "")

        def out(text: str) -> str:
            return _listed(text, encode)

        root = cosxml.element("ListMultipartUploadsResult")
        cosxml.sub(root, "Bucket", bucket)
        if encode:
            cosxml.sub(root, "Encoding-Type", "url")
        cosxml.sub(root, "Prefix", out(prefix))
        cosxml.sub(root, "MaxUploads", 1000)
        cosxml.sub(root, "IsTruncated", "false")
        uploads = await deferToThread(self._uploads.uploads, bucket, prefix)  # a read each
        for u in uploads:
            upload = cosxml.sub(root, "Upload")
            cosxml.sub(upload, "Key", out(u.key))
            cosxml.sub(upload, "UploadId", u.upload_id)
            cosxml.sub(upload, "StorageClass", "STANDARD")
            _owner(upload)
            cosxml.sub(upload, "Initiated", _iso(u.initiated))
        finish_xml(request, root)

    def _save_meta(
        self,
        bucket: str,
        key: str,
        meta: ObjectMeta,
        identity: tuple[int, int, int, int, int] | None,
    ) -> None:
        try:
            if meta.content_type or meta.user:
                self._store.write_meta(bucket, key, meta, identity)
            else:
                self._store.clear_meta(bucket, key)
        except (FileNotFoundError, NotADirectoryError, UnsafePath):
            # A DELETE took the object between its publishing and this: nothing to describe.
            log.info(
                "Metadata of {bucket}/{key} not saved: deleted meanwhile", bucket=bucket, key=key
            )

    # -- origin rules --------------------------------------------------------------------------

    async def _put_origin(self, request: Request, bucket: str) -> None:
        assert request.content is not None
        body = request.content.read(_MAX_ORIGIN_BODY + 1)
        try:
            rules = parse_origin_xml(body)
        except RuleError as e:
            malformed = isinstance(e, MalformedRuleXML)
            code = errors.MALFORMED_XML if malformed else errors.INVALID_ARGUMENT
            raise Denied(code, str(e)) from None
        for rule in rules:
            await self._vet(rule)
        in_order = ordered(rules)
        await deferToThread(self._rules.save, bucket, in_order)  # fsyncs: off the reactor
        self._rules.apply(bucket, in_order)
        log.info(
            "Origin rules of {bucket} set: {rules}",
            bucket=bucket,
            rules=[
                f"{r.priority}:{r.origin_type}:{r.prefix or '*'}->{r.origin.netloc}" for r in rules
            ],
        )
        request.setHeader(b"content-length", b"0")
        request.finish()

    async def _vet(self, rule: OriginRule) -> None:
        """Every address the rule's host stands for must pass the ISP check, as in the
        config file; a domain is resolved now and each address judged."""
        resolved = await self._resolver.resolve(rule.origin)
        if resolved.error is not None:
            raise Denied(
                errors.INVALID_ARGUMENT,
                f"origin {rule.origin.netloc} cannot be resolved: {resolved.error}",
            )
        refused = resolved.refused
        if refused or not resolved.accepted:
            reasons = "; ".join(f"{v.address}: {v.reason}" for v in refused) or "no addresses"
            raise Denied(
                errors.INVALID_ARGUMENT,
                f"origin {rule.origin.netloc} is not accepted ({reasons})",
            )

    def _get_origin(self, request: Request, bucket: str) -> bytes:
        rules = self._rules.rules(bucket)
        if not rules:
            raise Denied(errors.NO_SUCH_ORIGIN)
        body = render_origin_xml(rules)
        request.setHeader(b"content-type", b"application/xml")
        request.setHeader(b"content-length", b"%d" % len(body))
        return body


# COS object sub-resources this edge does not implement. Without this check a signed
# `DELETE /key?tagging` deleted the object and `GET /key?acl` returned its bytes.
_OBJECT_SUBRESOURCES = frozenset(
    {"acl", "tagging", "restore", "select", "select-type", "torrent", "append", "versionid",
     "retention", "legal-hold", "attributes", "symlink", "rename", "policy", "cors"}
)  # fmt: skip


def is_object_subresource(query: Mapping[str, str]) -> bool:
    """Whether the query names an object sub-resource (`?acl`, `?tagging`, ...)."""
    return not _OBJECT_SUBRESOURCES.isdisjoint(query)


def refuse_object_subresource(query: Mapping[str, str]) -> None:
    """501 NotImplemented for an object operation named by a sub-resource we lack."""
    found = sorted(_OBJECT_SUBRESOURCES & query.keys())
    if found:
        raise Denied(errors.NOT_IMPLEMENTED, f"?{found[0]} on an object is not supported")


_LIST_PARAMS = {"prefix", "delimiter", "marker", "max-keys", "encoding-type"}
_MAX_ORIGIN_BODY = 64 * 1024
_MAX_COMPLETE_BODY = 2 * 1024 * 1024  # 10,000 parts' worth of <Part> elements


def _meta_from(headers: Mapping[str, str]) -> ObjectMeta:
    """Content-Type and x-cos-meta-* of an upload, kept for its GETs.

    Refused (400 InvalidArgument, as COS does) unless every value is visible ASCII: they
    are sent back on every GET, and a value HTTP cannot carry would break each of them.
    """
    meta = ObjectMeta(
        headers.get("content-type", ""),
        {k: v for k, v in headers.items() if k.startswith(_META_PREFIX)},
    )
    for name, value in (("content-type", meta.content_type), *meta.user.items()):
        if not (is_token(name) and is_safe_value(value)):
            raise Denied(
                errors.INVALID_ARGUMENT,
                f"{name}: header values must be visible ASCII characters",
            )
    return meta


def _spooled_body(request: Request) -> UploadSpool | None:
    """The request's body as spooled by `EdgeRequest` (None when it had none)."""
    content = request.content
    if not isinstance(content, UploadSpool):
        return None
    if content.too_large:
        raise Denied(errors.ENTITY_TOO_LARGE)
    return content


def _mtime(path: os.PathLike[str]) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _owner(parent: ET.Element) -> None:
    owner = cosxml.sub(parent, "Owner")
    cosxml.sub(owner, "ID", "cosedge")
    cosxml.sub(owner, "DisplayName", "cosedge")


def _request_path(request: Request) -> str:
    """The decoded path the request was sent to (what a path-style signature signs)."""
    uri = request.uri
    if uri.startswith((b"http://", b"https://")):
        uri = b"/" + uri.split(b"/", 3)[3] if uri.count(b"/") >= 3 else b"/"
    raw = uri.partition(b"?")[0]
    return urllib.parse.unquote_to_bytes(raw).decode("utf-8", "replace")


def _listed(text: str, encode: bool) -> str:
    """A key or prefix as a listing shows it: percent-encoded with `encoding-type=url`."""
    return urllib.parse.quote(text, safe="/") if encode else text


def _xml(request: Request, root: ET.Element) -> bytes:
    body = cosxml.document(root)
    request.setHeader(b"content-type", b"application/xml")
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


def finish_xml(request: Request, root: ET.Element) -> None:
    body = _xml(request, root)
    if request.method != b"HEAD":
        request.write(body)
    request.finish()


def finish_error(request: Request, error: CosError, message: str | None = None) -> None:
    body = errors.write_error(
        request,
        error,
        errors.resource_of(request),
        request.request_id,  # type: ignore[attr-defined]
        message,
    )
    if body:
        request.write(body)
    request.finish()
