"""The dry run of an origin rule: `GET /?cosedge-origin-check&address=HOST[:PORT][&key=K]`.

Before a rule is saved an operator wants to see what the edge would make of it: the
address is parsed and resolved as `PUT /?origin` would, each address judged (ISP verdict,
or a loop back into the edge), and with `key` one HEAD goes to the first accepted address
through the copier's pinned connection. Nothing is saved; the answer is JSON, 200 whether
the rule would be accepted or not (`accepted`), and 400 only for a request that cannot be
judged (no or a malformed address, a bad key). `cosedge-admin origin check` speaks it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from twisted.web.server import Request

from edge.api import errors
from edge.api.auth import Denied
from edge.api.replies import run
from edge.config import OriginAddress, loop_reason
from edge.origin.copier import OriginCopier, OriginResolver, choose_address
from edge.store.keys import InvalidKey, validate_key

QUERY = "cosedge-origin-check"


class OriginCheck:
    """Judges an origin address for a bucket without changing anything."""

    def __init__(
        self,
        resolver: OriginResolver,
        copier: OriginCopier | None,
        domains: Callable[[str], tuple[str, ...]],
    ) -> None:
        self._resolver = resolver
        self._copier = copier
        self._domains = domains

    def render(self, request: Request, bucket: str, query: Mapping[str, str]) -> int:
        if request.method != b"GET":
            raise Denied(errors.METHOD_NOT_ALLOWED)
        return run(request, self._check(request, bucket, query))

    async def _check(self, request: Request, bucket: str, query: Mapping[str, str]) -> None:
        text = query.get("address", "")
        if not text:
            raise Denied(errors.INVALID_ARGUMENT, "address is required (host[:port])")
        try:
            origin = OriginAddress.parse(text)
        except ValueError as e:
            raise Denied(errors.INVALID_ARGUMENT, f"address: {e}") from None
        key = query.get("key")
        if key is not None:
            try:
                validate_key(key)
            except InvalidKey as e:
                raise Denied(errors.INVALID_ARGUMENT, f"key: {e}") from None
        answer = await self.judge(bucket, origin, key)
        body = json.dumps(answer, indent=2).encode() + b"\n"
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"content-length", b"%d" % len(body))
        request.write(body)
        request.finish()

    async def judge(self, bucket: str, origin: OriginAddress, key: str | None) -> dict[str, Any]:
        """The verdict `PUT /?origin` would reach for `origin`, and the probe's answer."""
        answer: dict[str, Any] = {
            "bucket": bucket,
            "address": origin.netloc,
            "accepted": False,
            "reason": None,
            "addresses": [],
            "probe": None,
        }
        loop = loop_reason(origin, self._domains(bucket))
        if loop is not None:
            answer["reason"] = loop
            return answer
        resolved = await self._resolver.resolve(origin)
        answer["addresses"] = [
            {
                "address": v.address,
                "accepted": v.accepted,
                "isps": sorted(v.isps),
                "reason": v.reason,
            }
            for v in resolved.verdicts
        ]
        if resolved.error is not None:
            answer["reason"] = f"cannot be resolved: {resolved.error}"
        elif resolved.refused or not resolved.accepted:
            answer["reason"] = (
                "; ".join(f"{v.address}: {v.reason}" for v in resolved.refused) or "no addresses"
            )
        else:
            answer["accepted"] = True
        if key is not None and answer["accepted"] and self._copier is not None:
            address = choose_address(resolved.accepted)
            answer["probe"] = (await self._copier.probe(origin, address, key)).to_json()
        return answer
