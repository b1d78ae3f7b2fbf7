"""The public read-only resource: Host -> bucket -> object, a hit or a miss (SPEC §3).

A request flows one way: parse the target, then either the store answers (hit) or the origin
side does (miss: 302 now, copy in the background). Nothing here waits on an origin.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from edge.api import errors, signature
from edge.api.buckets import BucketRegistry, split_host
from edge.api.errors import CosError
from edge.api.headers import is_safe_value, is_token, send_as_is
from edge.api.management import (
    Denied,
    ManagementAPI,
    is_object_subresource,
    refuse_object_subresource,
    request_query,
)
from edge.api.rules import PROXY, OriginRule, OriginRules
from edge.config import BucketConfig
from edge.origin.copier import (
    CopyStart,
    OriginCopier,
    OriginResolver,
    ResolvedOrigin,
    choose_address,
)
from edge.store.folder.objects import FolderObject as StoredObject
from edge.store.folder.store import FolderStore as ObjectStore
from edge.store.keys import InvalidKey, validate_key
from edge.web.bodies import (
    MAX_OBJECT_BODY,
    MAX_XML_BODY,
    BodyRefused,
    BodySpool,
    BodySpools,
    SpoolBudget,
    refusal_of,
)
from edge.web.http import (
    RangeResult,
    http_date,
    if_range_allows,
    parse_range,
    precondition_status,
)

log = Logger()

_READ_METHODS = (b"GET", b"HEAD")
_WARN_INTERVAL = 60.0


_dates: dict[float, bytes] = {}


def _last_modified(mtime: float) -> bytes:
    """`http_date(mtime)`, remembered: formatting a date was 2 % of a hit."""
    date = _dates.get(mtime)
    if date is None:
        if len(_dates) > 10_000:
            _dates.clear()
        date = _dates[mtime] = http_date(mtime)
    return date


@dataclass(frozen=True)
class Target:
    """Where a request points: a bucket (by name; None for the service root), whether it
    exists, and the key as decoded and as sent (None for the bucket itself)."""

    bucket_name: str | None
    bucket: BucketConfig | None
    key: str | None
    raw_key: bytes  # still percent-encoded: the redirect repeats the key as requested
    query: bytes | None


class _BadTarget(Exception):
    def __init__(self, error: CosError) -> None:
        super().__init__(error.code)
        self.error = error


class EdgeResource(Resource):
    """Answers every anonymous request; one instance serves all buckets."""

    isLeaf = True

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
        self._spools = spools
        self._registry = registry
        self._rules = rules
        self._api = api
        self._store = store
        self._resolver = resolver
        self._copier = copier
        self._clock = clock
        self._warned: dict[tuple[str, str], float] = {}
        self._locations: dict[Any, bytes] = {}  # origin -> the 302 Location's prefix

    # -- dispatch ---------------------------------------------------------------------------

    def render(self, request: Request) -> bytes | int:
        request.setHeader(b"server", b"cosedge")
        refused = refusal_of(request)
        if refused is not None:
            return self._error(request, refused.error, refused.message)
        try:
            target = self.target(request)
        except _BadTarget as e:
            return self._error(request, e.error)
        if self._api is not None and signature.is_signed(
            request.getHeader(b"authorization"), target.query
        ):
            try:
                return self._signed(request, target, self._api)
            except Denied as e:
                return self._error(request, e.error, e.message)
        if request.method not in _READ_METHODS:
            return self._error(request, errors.ACCESS_DENIED)
        if target.bucket_name is None or target.key is None:
            if target.bucket_name is not None and target.bucket is None:
                return self._error(request, errors.NO_SUCH_BUCKET)
            # The bucket root or the service root: listing is the signed API's, not ours.
            return self._error(request, errors.ACCESS_DENIED)
        if target.query is not None and is_object_subresource(request_query(request)):
            # `GET /key?acl` asks for the object's ACL, not its bytes: not for anonymous eyes.
            return self._error(request, errors.ACCESS_DENIED)
        return self._read(request, target)

    def body_sink_for(self, request: Request, length: int | None) -> BodySpool:
        """Where the body of `request` goes, decided from its line and headers before a byte
        of it is read (`EdgeRequest.gotLength`); raises `BodyRefused` to refuse it unread.

        Only an authenticated request for an operation that takes a body gets a spool:
        anonymous requests may only read, and a read has no body, so neither can make the
        edge write to its disk. (The API checks the signature again when it answers.)
        """
        try:
            target = self.target(request)
        except _BadTarget as e:
            raise BodyRefused(e.error) from None
        api = self._api
        if api is None or not signature.is_signed(
            request.getHeader(b"authorization"), target.query
        ):
            if request.method in _READ_METHODS:
                raise BodyRefused(errors.INVALID_REQUEST, "a GET or HEAD request has no body")
            raise BodyRefused(errors.ACCESS_DENIED)
        try:
            api.authenticate(request, target.bucket_name, target.key)
        except Denied as e:
            raise BodyRefused(e.error, e.message) from None
        limit = _body_limit(request.method, target, request_query(request))
        if limit is None:
            raise BodyRefused(errors.INVALID_REQUEST)
        if length is not None and length > limit:
            raise BodyRefused(errors.ENTITY_TOO_LARGE)
        return self._spools.open(length, limit)

    def _signed(self, request: Request, target: Target, api: ManagementAPI) -> bytes | int:
        credential = api.authenticate(request, target.bucket_name, target.key)
        listing_parts = target.query is not None and b"uploadid=" in target.query.lower()
        if target.key is not None and request.method in _READ_METHODS and not listing_parts:
            refuse_object_subresource(request_query(request))
            return self._read(request, target)
        return api.render(request, target.bucket_name, target.key, credential)

    def _read(self, request: Request, target: Target) -> bytes | int:
        """GET/HEAD of an object, signed or not: a hit is served, a miss goes to its rule."""
        if target.bucket is None or target.key is None:
            return self._error(request, errors.NO_SUCH_BUCKET)
        obj = self._store.open_object(target.bucket.name, target.key)
        if obj is not None:
            self._serve_hit(request, target, obj)
            return NOT_DONE_YET
        rule = self._rules.match(target.bucket.name, target.key)
        if rule is None:
            return self._error(request, errors.NO_SUCH_KEY)
        resolved = self._resolver.resolved_now(rule.origin)
        if resolved is not None:  # an IP origin, or a name in the DNS cache: no waiting
            self._answer_miss(request, target, rule, resolved)
            return NOT_DONE_YET
        request_id: str = request.request_id  # type: ignore[attr-defined]
        d = ensureDeferred(self._miss(request, target, rule))
        d.addErrback(self._unexpected, request, request_id)
        return NOT_DONE_YET

    def target(self, request: Request) -> Target:
        """Resolve bucket and key, or raise `_BadTarget` for a key that is never valid.

        The Host picks the bucket by a configured domain, then by the API form
        `<bucket>.<anything>.myqcloud.com`; otherwise the first path segment names it.
        """
        uri = request.uri
        host_header = request.getHeader(b"host")
        if uri[:1] != b"/" and uri[:8].lower().startswith((b"http://", b"https://")):
            # Absolute form (RFC 9112 §3.2.2): the target's authority names the host and
            # the Host header is ignored.
            rest = uri.split(b"//", 1)[1]
            cut = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=-1)
            authority, remainder = (rest, b"") if cut < 0 else (rest[:cut], rest[cut:])
            host_header = authority.rpartition(b"@")[2]
            uri = remainder if remainder.startswith(b"/") else b"/" + remainder
            # The Host header is replaced, not just ignored here: the signature check, the
            # errors' <Resource> and every other reader of Host must see the same bucket
            # (a signature for bucket A sent as `http://B/...` with `Host: A` was accepted).
            if request.getHeader(b"host") != host_header:
                request.requestHeaders.setRawHeaders(b"host", [host_header])
                request.__dict__.pop("_cos_headers", None)
        raw_path, sep, query = uri.partition(b"?")
        query_or_none = query if sep else None
        host = split_host(host_header)
        bucket = self._registry.by_domain(host)
        name = bucket.name if bucket is not None else self._registry.name_from_api_host(host)
        if name is not None:
            raw_key = raw_path[1:] if raw_path.startswith(b"/") else raw_path
        else:
            name_raw, _, raw_key = raw_path.lstrip(b"/").partition(b"/")
            if not name_raw:
                return Target(None, None, None, b"", query_or_none)
            name = _decode(name_raw)
        if bucket is None:
            bucket = self._registry.get(name)
        if not raw_key:
            return Target(name, bucket, None, b"", query_or_none)
        key = _decode(raw_key)
        try:
            validate_key(key)
        except InvalidKey:
            raise _BadTarget(errors.INVALID_URI) from None
        return Target(name, bucket, key, raw_key, query_or_none)

    # -- hit -------------------------------------------------------------------------------

    def _serve_hit(self, request: Request, target: Target, obj: StoredObject) -> None:
        assert target.bucket is not None and target.key is not None
        meta = self._store.read_meta(target.bucket.name, target.key, obj)
        if meta is not None:
            # Metadata that is not HTTP-safe (written by hand, or before PUT checked it) is
            # left out rather than failing every GET of the object.
            if meta.content_type and is_safe_value(meta.content_type):
                obj = obj.with_content_type(meta.content_type)
            for name, value in meta.user.items():
                if not (is_token(name) and is_safe_value(value)):
                    continue
                request.setHeader(send_as_is(name.encode("latin-1")), value.encode("utf-8"))
        cached = self._store.etags.get(obj.identity)
        if cached is not None:  # the usual case: answered now, no Deferred
            try:
                self._respond_hit(cached, request, obj)
            except Exception:
                self._hit_failed(Failure(), request, obj)
            return
        d = self._store.etag(target.bucket.name, target.key, obj)
        d.addCallback(self._respond_hit, request, obj)
        d.addErrback(self._hit_failed, request, obj)

    def _respond_hit(self, etag_hex: str, request: Request, obj: StoredObject) -> None:
        if request.finished or request._disconnected:
            obj.file.close()
            return
        etag = b'"' + etag_hex.encode("ascii") + b'"'
        request.setHeader(b"etag", etag)
        request.setHeader(b"last-modified", _last_modified(obj.mtime))
        request.setHeader(b"accept-ranges", b"bytes")
        status = precondition_status(
            etag=etag,
            mtime=obj.mtime,
            if_match=request.getHeader(b"if-match"),
            if_none_match=request.getHeader(b"if-none-match"),
            if_modified_since=request.getHeader(b"if-modified-since"),
            if_unmodified_since=request.getHeader(b"if-unmodified-since"),
        )
        if status == 304:
            obj.file.close()
            request.setResponseCode(304)
            request.finish()
            return
        if status == 412:
            obj.file.close()
            self._finish_error(request, errors.PRECONDITION_FAILED)
            return
        request.setHeader(b"content-type", obj.content_type.encode("ascii"))
        byte_range = None
        if if_range_allows(request.getHeader(b"if-range"), etag, obj.mtime):
            byte_range = parse_range(request.getHeader(b"range"), obj.size)
        if byte_range is RangeResult.UNSATISFIABLE:
            obj.file.close()
            request.setHeader(b"content-range", b"bytes */%d" % obj.size)
            self._finish_error(request, errors.INVALID_RANGE)
            return
        if isinstance(byte_range, tuple):
            first, last = byte_range
            length = last - first + 1
            request.setResponseCode(206)
            request.setHeader(b"content-range", b"bytes %d-%d/%d" % (first, last, obj.size))
        else:
            first, length = 0, obj.size
        request.setHeader(b"content-length", b"%d" % length)
        if request.method == b"HEAD" or length == 0:
            obj.file.close()
            request.finish()
            return
        obj.send(request, first, length)

    def _hit_failed(self, failure: Failure, request: Request, obj: StoredObject) -> None:
        obj.file.close()
        self._unexpected(failure, request, request.request_id)  # type: ignore[attr-defined]

    # -- miss ------------------------------------------------------------------------------

    async def _miss(self, request: Request, target: Target, rule: OriginRule) -> None:
        resolved = await self._resolver.resolve(rule.origin)
        if request.finished or request._disconnected:
            return
        self._answer_miss(request, target, rule, resolved)

    def _answer_miss(
        self, request: Request, target: Target, rule: OriginRule, resolved: ResolvedOrigin
    ) -> None:
        """SPEC §3: redirect at once; a GET under a Proxy rule also starts the copy."""
        bucket = target.bucket
        assert bucket is not None and target.key is not None
        origin = rule.origin
        accepted = resolved.accepted
        if not accepted:
            self._warn_refused(bucket.name, resolved)
            self._finish_error(request, errors.NO_SUCH_KEY)
            return
        prefix = self._locations.get(origin)
        if prefix is None:  # once per origin: b"http://host:port/"
            if len(self._locations) > 1000:
                self._locations.clear()
            prefix = self._locations[origin] = b"http://%s/" % origin.netloc.encode("ascii")
        query = target.query
        if query and rule.follow_query_string:
            query = _origin_query(query)
            location = prefix + target.raw_key + b"?" + query if query else prefix + target.raw_key
        else:
            location = prefix + target.raw_key
        request.setResponseCode(rule.redirect_code)
        request.setHeader(b"location", location)
        request.setHeader(b"content-length", b"0")
        request.finish()
        if request.method != b"GET" or rule.origin_type != PROXY:
            return  # COS: HEAD never triggers a pull; a Redirect rule only redirects
        started = self._copier.copy(
            bucket.name,
            target.key,
            origin,
            choose_address(accepted),
            request.request_id,  # type: ignore[attr-defined]
        )
        if started is CopyStart.STARTED or started is CopyStart.QUEUED:
            log.debug(
                "Miss on {bucket}/{key}: copy {state} from {origin}",
                bucket=bucket.name,
                key=target.key,
                state=started.value,
                origin=origin.netloc,
            )

    def _warn_refused(self, bucket: str, resolved: Any) -> None:
        origin = resolved.origin
        now = self._clock.seconds()
        last = self._warned.get((bucket, origin.host))
        if last is not None and now - last < _WARN_INTERVAL:
            return
        self._warned[(bucket, origin.host)] = now
        addresses = [f"{v.address} ({v.reason})" for v in resolved.refused]
        log.warn(
            "Origin {domain} of bucket {bucket} has no acceptable address: {addresses}; "
            "misses answer 404 NoSuchKey",
            bucket=bucket,
            domain=origin.host,
            origin=origin.netloc,
            addresses=addresses or [resolved.error or "no addresses"],
            reason=resolved.error or "no address passed the ISP check",
        )

    # -- errors ----------------------------------------------------------------------------

    def _error(self, request: Request, error: CosError, message: str | None = None) -> bytes:
        return errors.write_error(
            request,
            error,
            errors.resource_of(request),
            request.request_id,  # type: ignore[attr-defined]
            message,
        )

    def _finish_error(self, request: Request, error: CosError) -> None:
        body = self._error(request, error)
        if body:
            request.write(body)
        request.finish()

    def _unexpected(self, failure: Failure, request: Request, request_id: str) -> None:
        log.failure("Request {request_id} failed", failure, request_id=request_id)
        if request.finished or request._disconnected:
            return
        if request.startedWriting:
            if request.channel is not None:
                request.channel.loseConnection()
            return
        self._finish_error(request, errors.INTERNAL_ERROR)


def _body_limit(method: bytes, target: Target, query: dict[str, str]) -> int | None:
    """The largest body the signed operation takes, or None when it takes none."""
    if target.bucket_name is None:
        return None
    if target.key is None:  # bucket PUT (CreateBucketConfiguration) and PUT ?origin
        return MAX_XML_BODY if method == b"PUT" else None
    if method == b"PUT":
        if "partnumber" in query or not any(not q.startswith("q-") for q in query):
            return MAX_OBJECT_BODY  # an object, or a part of a multipart upload
        return MAX_XML_BODY  # ?acl, ?tagging: answered NotImplemented, small anyway
    if method == b"POST" and ("uploads" in query or "uploadid" in query):
        return MAX_XML_BODY  # initiate, or complete with its list of parts
    return None


def _decode(raw: bytes) -> str:
    try:
        return urllib.parse.unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise _BadTarget(errors.INVALID_URI) from None


def _origin_query(query: bytes | None) -> bytes | None:
    """The query string to repeat to the origin, without a pre-signed URL's signature or
    its temporary-credential token: the origin (a third party's server) must never see
    them."""
    if not query:
        return query
    lowered = query.lower()
    if b"q-sign" not in lowered and b"x-cos-security-token" not in lowered:
        return query
    kept = [
        p for p in query.split(b"&") if not p.lower().startswith((b"q-", b"x-cos-security-token"))
    ]
    return b"&".join(kept) or None
