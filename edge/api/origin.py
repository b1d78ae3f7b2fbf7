"""A bucket's back-to-origin rules as the API sets them: PUT, GET and DELETE `?origin`.

The rules model and its XML (`OriginConfiguration`) are `edge.api.rules`; this module reads
the request, vets every origin the rules name before any is saved (each address a host
resolves to must pass the same ISP check as an origin in the config file, and none may
loop back into the edge) and answers. A DELETE falls back to the config file's rule, when
it has one.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.web.server import Request

from edge.api import errors
from edge.api.auth import Denied
from edge.api.replies import run
from edge.api.rules import MalformedRuleXML, OriginRule, OriginRules, RuleError, ordered
from edge.api.rules_xml import parse_origin_xml, render_origin_xml
from edge.config import OriginAddress, loop_reason
from edge.origin.copier import OriginResolver

log = Logger()

_MAX_ORIGIN_BODY = 64 * 1024


class OriginOperations:
    """`?origin` of a bucket the dispatcher found registered."""

    def __init__(
        self,
        rules: OriginRules,
        resolver: OriginResolver,
        domains: Callable[[str], tuple[str, ...]] = lambda bucket: (),
    ) -> None:
        self._rules = rules
        self._resolver = resolver
        self._domains = domains

    def render(self, request: Request, bucket: str) -> bytes | int:
        """PUT sets the rules, GET shows them, DELETE drops them; anything else is 405."""
        method = request.method
        if method == b"PUT":
            return run(request, self._put(request, bucket))
        if method == b"GET":
            return self._get(request, bucket)
        if method == b"DELETE":
            if self._rules.shared is not None:
                return run(request, self._delete_shared(request, bucket))
            return self._delete(request, bucket)
        raise Denied(errors.METHOD_NOT_ALLOWED)

    async def _put(self, request: Request, bucket: str) -> None:
        assert request.content is not None
        body = request.content.read(_MAX_ORIGIN_BODY + 1)
        try:
            rules = parse_origin_xml(body)
        except RuleError as e:
            malformed = isinstance(e, MalformedRuleXML)
            code = errors.MALFORMED_XML if malformed else errors.INVALID_ARGUMENT
            raise Denied(code, str(e)) from None
        for rule in rules:
            await self._vet(rule, self._domains(bucket))
        in_order = ordered(rules)
        if self._rules.shared is not None:  # a cluster: the state bucket first, for every node
            await self._rules.shared.put(
                f"origin/{bucket}.json", self._rules.record(bucket, in_order)
            )
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

    async def _vet(self, rule: OriginRule, domains: tuple[str, ...]) -> None:
        """Every address the rule's host stands for must pass the ISP check, as in the
        config file; a domain is resolved now and each address judged. An origin that is
        the bucket's own domain, or resolves to where the edge listens, would loop.
        Standbys are judged the same way, except that a domain standby is resolved (and
        judged) when a copy needs it: it is there for when names and hosts fail."""
        for standby in rule.standbys:
            self._vet_standby(standby, domains)
        loop = loop_reason(rule.origin, domains)
        if loop is not None:
            raise Denied(errors.INVALID_ARGUMENT, loop)
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

    def _vet_standby(self, standby: OriginAddress, domains: tuple[str, ...]) -> None:
        loop = loop_reason(standby, domains)
        if loop is not None:
            raise Denied(errors.INVALID_ARGUMENT, f"standby {loop}")
        resolved = self._resolver.resolved_now(standby) if standby.ip is not None else None
        if resolved is not None and not resolved.accepted:
            reasons = "; ".join(f"{v.address}: {v.reason}" for v in resolved.refused)
            raise Denied(
                errors.INVALID_ARGUMENT,
                f"standby origin {standby.netloc} is not accepted ({reasons})",
            )

    def _get(self, request: Request, bucket: str) -> bytes:
        rules = self._rules.rules(bucket)
        if not rules:
            known = self._rules.knows_every_rule()
            raise Denied(errors.NO_SUCH_ORIGIN if known else errors.SERVICE_UNAVAILABLE)
        body = render_origin_xml(rules)
        request.setHeader(b"content-type", b"application/xml")
        request.setHeader(b"content-length", b"%d" % len(body))
        return body

    async def _delete_shared(self, request: Request, bucket: str) -> None:
        """A cluster's DELETE: out of the state bucket first, then here."""
        assert self._rules.shared is not None
        await self._rules.shared.delete(f"origin/{bucket}.json")
        request.write(self._delete(request, bucket))
        request.finish()

    def _delete(self, request: Request, bucket: str) -> bytes:
        self._rules.delete(bucket)
        log.info(
            "Origin rules of {bucket} deleted; rules now from {source}",
            bucket=bucket,
            source=self._rules.source(bucket),
        )
        request.setResponseCode(204)
        return b""
