"""A miss: an object the store lacks, answered by its bucket's origin rules (SPEC §3).

The first rule that matches the key names the origin; once the origin's name is resolved
(at once for an IP or a cached name, else after one DNS lookup) and vetted, the answer is a
redirect to the origin, and a GET under a Proxy rule also starts the copy into the store in
the background. Nothing here waits on the origin itself. An origin with no acceptable
address answers 404 NoSuchKey, with a warning at most once a minute per bucket and origin.

Every miss answer says what became of the copy in `x-cosedge-copy` (SPEC §9), from the
copier's `CopyStart`. With the S3 store the key's lock is asked of Redis asynchronously, so
`started` means the copy was handed on: if another node holds the lock, the copy is that
node's after all (its records say so), which the header cannot wait to learn.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET, Request

from edge.api import errors
from edge.api.headers import CONTENT_LENGTH, canonical, set_own
from edge.api.rules import MIRROR, PROXY, OriginRule, OriginRules
from edge.origin.copier import (
    CopyStart,
    OriginCopier,
    OriginResolver,
    ResolvedOrigin,
    choose_address,
)
from edge.origin.request import OriginPlan, quote_path
from edge.web.mirror import MirrorReads
from edge.web.replies import error, finish_error, unexpected
from edge.web.target import Target

log = Logger()

COPY_HEADER = b"x-cosedge-copy"
_COPY = canonical(COPY_HEADER)
_HEADER_VALUES = {
    CopyStart.STARTED: b"started",
    CopyStart.JOINED: b"joined",
    CopyStart.QUEUED: b"queued",
    CopyStart.OVERFLOW: b"overflow",
    CopyStart.ELSEWHERE: b"elsewhere",
    CopyStart.BACKING_OFF: b"backing-off",
    CopyStart.NOT_FOUND: b"backing-off",
    CopyStart.BREAKER_OPEN: b"backing-off",
    CopyStart.STOPPING: b"none",
}

_WARN_INTERVAL = 60.0


def _note_copy(request: Request, started: CopyStart) -> None:
    """A Mirror miss's `x-cosedge-copy`, set before its answer begins."""
    request.setHeader(COPY_HEADER, _HEADER_VALUES[started])


class Misses:
    """Answers requests for objects the store lacks; one instance serves all buckets."""

    def __init__(
        self,
        rules: OriginRules,
        resolver: OriginResolver,
        copier: OriginCopier,
        clock: Any,
        mirror: MirrorReads | None = None,
    ) -> None:
        self._mirror = mirror  # Mirror rules' misses (edge.web.mirror): no redirect
        self._rules = rules
        self._resolver = resolver
        self._copier = copier
        self._clock = clock
        self._warned: dict[tuple[str, str], float] = {}
        self._locations: dict[Any, bytes] = {}  # origin -> the 302 Location's prefix

    def answer(self, request: Request, target: Target, copy: bool = True) -> bytes | int:
        """`render`'s return for a GET/HEAD of a key the store lacks in a served bucket;
        `copy=False` redirects without copying (the store cannot be reached: SPEC §8)."""
        assert target.bucket is not None and target.key is not None
        rule = self._rules.match(target.bucket.name, target.key)
        set_own(request.responseHeaders, _COPY, b"none")  # until a copy is handed on
        if rule is None:  # 404, unless the rule may exist elsewhere or the store is out
            known = copy and self._rules.knows_every_rule()
            return error(request, errors.NO_SUCH_KEY if known else errors.SERVICE_UNAVAILABLE)
        resolved = self._resolver.resolved_now(rule.origin)
        if resolved is not None:  # an IP origin, or a name in the DNS cache: no waiting
            self._redirect(request, target, rule, resolved, copy)
            return NOT_DONE_YET
        request_id: str = request.request_id  # type: ignore[attr-defined]
        d = ensureDeferred(self._resolve_then_redirect(request, target, rule, copy))
        d.addErrback(unexpected, request, request_id)
        return NOT_DONE_YET

    async def _resolve_then_redirect(
        self, request: Request, target: Target, rule: OriginRule, copy: bool
    ) -> None:
        resolved = await self._resolver.resolve(rule.origin)
        if request.finished or request._disconnected:
            return
        self._redirect(request, target, rule, resolved, copy)

    def _redirect(
        self,
        request: Request,
        target: Target,
        rule: OriginRule,
        resolved: ResolvedOrigin,
        copy: bool = True,
    ) -> None:
        """SPEC §3: redirect at once; a GET under a Proxy rule also starts the copy."""
        bucket = target.bucket
        assert bucket is not None and target.key is not None
        origin = rule.origin
        accepted = resolved.accepted
        if not accepted:
            self._warn_refused(bucket.name, resolved)
            finish_error(request, errors.NO_SUCH_KEY)
            return
        if rule.origin_type == MIRROR and self._mirror is not None:
            address = choose_address(accepted)
            self._mirror.answer(request, target, rule, address, copy, _note_copy)
            return
        # COS: HEAD never triggers a pull; a Redirect rule only redirects. Only a copy needs
        # the whole plan (standbys, redirects): a 302 alone gets its scheme and path.
        copying = request.method == b"GET" and rule.origin_type == PROXY and copy
        secure = request.isSecure()
        plan: OriginPlan | None = None
        if copying:
            plan = rule.plan(target.key, secure)
            scheme, origin_path = plan.scheme, plan.path
        else:
            scheme, origin_path = rule.scheme(secure), rule.origin_path(target.key)
        prefix = self._locations.get((scheme, origin))
        if prefix is None:  # once per origin and scheme: b"http://host:port/"
            if len(self._locations) > 1000:
                self._locations.clear()
            netloc = origin.netloc.encode("ascii")
            prefix = self._locations[(scheme, origin)] = b"%s://%s/" % (scheme.encode(), netloc)
        # SPEC §11: FileInfo's prefix/suffix rewrite (None: the key as the client sent it)
        path = target.raw_key if origin_path is None else quote_path(origin_path)
        query = target.query
        if query and rule.follow_query_string:
            query = _origin_query(query)
            location = prefix + path + b"?" + query if query else prefix + path
        else:
            location = prefix + path
        request.setResponseCode(rule.redirect_code)
        request.setHeader(b"location", location)
        set_own(request.responseHeaders, CONTENT_LENGTH, b"0")
        if plan is None:
            request.finish()
            return
        # Handed on before the answer is sent, so the answer can say what became of it;
        # `copy` never waits on the origin.
        started = self._copier.copy(
            bucket.name,
            target.key,
            origin,
            choose_address(accepted),
            request.request_id,  # type: ignore[attr-defined]
            plan,
        )
        set_own(request.responseHeaders, _COPY, _HEADER_VALUES[started])
        request.finish()
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


def _origin_query(query: bytes | None) -> bytes | None:
    """The query string to repeat to the origin, without a pre-signed URL's signature or
    its temporary-credential token: the origin (a third party's server) must never see
    them."""
    if not query:
        return query
    lowered = query.lower()
    # find, not `in`: measured two and a half times faster on bytes
    if lowered.find(b"q-sign") < 0 and lowered.find(b"x-cos-security-token") < 0:
        return query
    kept = [
        p for p in query.split(b"&") if not p.lower().startswith((b"q-", b"x-cos-security-token"))
    ]
    return b"&".join(kept) or None
