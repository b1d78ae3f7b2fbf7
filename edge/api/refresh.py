"""The signed refresh API: `POST /<bucket>/?cosedge-refresh` (docs/refresh.md).

Names the keys to refresh in a JSON body (`{"keys": ["a.png", ...]}`, at most
`MAX_KEYS`), or a prefix in the query (`prefix=P`, paged with `marker` and `max-keys` over
the bucket's objects as the store lists them); `delete-missing` deletes the keys the origin
answers 404 for. Each key is refreshed from the origin its rule names, resolved and vetted
as for a miss (`edge.origin.refresh` does the conditional GET); at most
`origin_fetch.per_origin_concurrency` of one request run at once. The answer is JSON, 200
whatever became of the keys: one result per key in the order asked (`kept`, `replaced`,
`stored`, `missing`, `deleted`, `failed` with a `reason`), `counts` by result, and for a
prefix `truncated` / `next_marker` to ask for the next page. `cosedge-admin refresh` speaks
it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import DeferredSemaphore, gatherResults
from twisted.web.server import Request

from edge.api import errors
from edge.api.auth import Denied
from edge.api.replies import run
from edge.api.rules import REDIRECT, OriginRules
from edge.origin.copier import OriginCopier, OriginResolver, choose_address
from edge.origin.refresh import KeyRefresh, Refresher, Result
from edge.store.interface import ObjectStore
from edge.store.keys import InvalidKey, validate_key, validate_prefix

QUERY = "cosedge-refresh"
MAX_KEYS = 1000
DEFAULT_PAGE = 100
MAX_BODY = 1024 * 1024


class RefreshOperations:
    """`?cosedge-refresh` of a bucket the dispatcher found registered."""

    def __init__(
        self,
        rules: OriginRules,
        resolver: OriginResolver,
        store: ObjectStore,
        copier: OriginCopier | None,
    ) -> None:
        self._rules = rules
        self._resolver = resolver
        self._store = store
        self._copier = copier
        self._refresher = None if copier is None else Refresher(store, copier)

    def render(self, request: Request, bucket: str, query: Mapping[str, str]) -> int:
        if request.method != b"POST":
            raise Denied(errors.METHOD_NOT_ALLOWED, "refresh is POST /?cosedge-refresh")
        return run(request, self._refresh(request, bucket, query))

    async def _refresh(self, request: Request, bucket: str, query: Mapping[str, str]) -> None:
        delete_missing = _flag(query, "delete-missing")
        body = b"" if request.content is None else request.content.read(MAX_BODY + 1)
        answer: dict[str, Any] = {"bucket": bucket}
        if "prefix" in query:
            if body.strip():
                raise Denied(errors.INVALID_ARGUMENT, "name keys in the body or a prefix, not both")
            keys = await self._listed(bucket, query, answer)
        else:
            keys = _body_keys(body)
        results = await self.refresh_keys(bucket, keys, delete_missing)
        answer["results"] = [r.to_json() for r in results]
        answer["counts"] = dict(Counter(r.result.value for r in results))
        raw = json.dumps(answer, indent=2).encode() + b"\n"
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"content-length", b"%d" % len(raw))
        request.write(raw)
        request.finish()

    async def _listed(
        self, bucket: str, query: Mapping[str, str], answer: dict[str, Any]
    ) -> list[str]:
        """One page of the bucket's keys under `prefix`, after `marker`."""
        try:
            prefix = validate_prefix(query.get("prefix", ""))
            marker = validate_prefix(query.get("marker", ""), "marker")
        except InvalidKey as e:
            raise Denied(errors.INVALID_ARGUMENT, str(e)) from None
        text = query.get("max-keys", str(DEFAULT_PAGE))
        if not text.isdigit() or not 1 <= int(text) <= MAX_KEYS:
            raise Denied(errors.INVALID_ARGUMENT, f"max-keys must be 1..{MAX_KEYS}")
        page = await self._store.list_page(bucket, prefix, marker, "", int(text))
        answer["prefix"] = prefix
        answer["truncated"] = page.truncated
        answer["next_marker"] = page.next_marker if page.truncated else None
        return [item.key for item in page.contents]

    async def refresh_keys(
        self, bucket: str, keys: list[str], delete_missing: bool
    ) -> list[KeyRefresh]:
        """Refresh `keys`, a few at once; results in the order of `keys`."""
        if self._copier is None:
            return [KeyRefresh(k, Result.FAILED, "this edge copies nothing") for k in keys]
        limit = DeferredSemaphore(self._copier.fetcher.config.per_origin_concurrency)
        runs = [limit.run(self._one, bucket, key, delete_missing) for key in keys]
        return list(await gatherResults(runs))

    async def _one(self, bucket: str, key: str, delete_missing: bool) -> KeyRefresh:
        assert self._refresher is not None
        rule = self._rules.match(bucket, key)
        if rule is None:
            return KeyRefresh(key, Result.FAILED, "no origin rule matches the key")
        if rule.origin_type == REDIRECT:
            return KeyRefresh(key, Result.FAILED, "its origin rule only redirects (no copies)")
        resolved = await self._resolver.resolve(rule.origin)
        if not resolved.accepted:
            refused = "; ".join(f"{v.address}: {v.reason}" for v in resolved.refused)
            reason = resolved.error or refused or "no addresses"
            return KeyRefresh(key, Result.FAILED, f"origin {rule.origin.netloc}: {reason}")
        address = choose_address(resolved.accepted)
        # FOLLOW (the client's scheme) has no client here: such a rule is refreshed over HTTP.
        plan = rule.plan(key, secure=False)
        return await self._refresher.refresh(
            bucket, key, rule.origin, address, delete_missing, plan
        )


def _flag(query: Mapping[str, str], name: str) -> bool:
    value = query.get(name)
    if value is None:
        return False
    if value.lower() in ("", "true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise Denied(errors.INVALID_ARGUMENT, f"{name} must be true or false, not {value!r}")


def _body_keys(body: bytes) -> list[str]:
    """The keys of a `{"keys": [...]}` body, each checked as a request's key would be."""
    if len(body) > MAX_BODY:
        raise Denied(errors.ENTITY_TOO_LARGE)
    if not body.strip():
        raise Denied(errors.INVALID_ARGUMENT, 'name keys ({"keys": [...]}) or prefix=')
    try:
        raw = json.loads(body)
    except ValueError as e:
        raise Denied(errors.INVALID_ARGUMENT, f"the body is not JSON: {e}") from None
    keys = raw.get("keys") if isinstance(raw, dict) else None
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        raise Denied(errors.INVALID_ARGUMENT, 'the body must be {"keys": ["key", ...]}')
    if len(keys) > MAX_KEYS:
        raise Denied(errors.INVALID_ARGUMENT, f"at most {MAX_KEYS} keys a request")
    for key in keys:
        try:
            validate_key(key)
        except InvalidKey as e:
            raise Denied(errors.INVALID_ARGUMENT, f"key {key[:100]!r}: {e}") from None
    return list(dict.fromkeys(keys))  # each once, in the order given
