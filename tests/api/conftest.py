"""The management API in process, without a listening socket: a real folder store in
`tmp_path`, the real registry, rules, resolver and `EdgeResource`, reached through
`treq.testing.StubTreq` with requests signed as a COS SDK signs them.

StubTreq answers over an in-memory transport that it pumps only when asked, while the API
finishes its slower operations from threads (fsyncs, folder walks) back on the global
reactor; `ApiClient.call` keeps pumping, yielding to the reactor, until the answer is in.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from treq.testing import StubTreq
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater

from edge.api.buckets import BucketRegistry
from edge.api.management import ManagementAPI
from edge.api.rules import OriginRules
from edge.api.signature import sign
from edge.config import parse_config
from edge.isp.policy import OriginAddressPolicy
from edge.origin.copier import OriginCopier, OriginResolver
from edge.store.folder.store import FolderStore as ObjectStore
from edge.web.root import EdgeResource
from edge.web.site import EdgeSite

reactor: Any = _reactor

BUCKET = "examplebucket-1250000000"
DOMAIN = f"{BUCKET}.file.myqcloud.com"
SECRET_ID = "AKIDcosedgeUnit"
SECRET_KEY = "unit-secret"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def xml(self) -> ET.Element:
        return ET.fromstring(self.body)

    def code(self) -> str | None:
        """The `<Code>` of a COS error document."""
        return self.xml().findtext("Code")


class ApiClient:
    """Signed (or deliberately mis-signed) requests to one edge's resource tree."""

    def __init__(self, resource: EdgeResource, store: ObjectStore) -> None:
        self.store = store
        # StubTreq sets its request methods per instance: typed as Any.
        self._stub: Any = StubTreq(resource)
        # The edge's own site: its requests carry the request id every COS error names,
        # and its channel hands a request its line before the body, so the body is
        # spooled into the store's tmp folder once the signature checks out, as on a real
        # connection. StubTreq has no public way to choose the site it serves with.
        agent = self._stub._agent
        agent._serverFactory = EdgeSite(resource, reactor=agent._memoryReactor)

    async def call(
        self,
        method: str,
        path: str,
        *,
        host: str = DOMAIN,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        secret_id: str = SECRET_ID,
        secret_key: str = SECRET_KEY,
        signed_path: str | None = None,
    ) -> Answer:
        """`method host path?params`, signed over the Host and the given headers and
        params. The signed path is the path as sent: the key for a host-style request,
        bucket and key for a path-style one (`host` an IP), as `Authenticator` expects."""
        params = params or {}
        headers = dict(headers or {})
        if signed_path is None:
            signed_path = path
        to_sign = {"host": host, **headers}
        headers["Authorization"] = sign(
            secret_id, secret_key, method, urllib.parse.unquote(signed_path), params, to_sign
        )
        query = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
        url = f"http://{host}{path}" + (f"?{query}" if params else "")
        raw = {name: [value] for name, value in headers.items()}
        response = await self._settle(self._stub.request(method, url, headers=raw, data=body))
        content = await self._settle(self._stub.content(response))
        received = {
            name.decode("latin-1").lower(): values[-1].decode("latin-1")
            for name, values in response.headers.getAllRawHeaders()
        }
        return Answer(response.code, received, content)

    async def _settle(self, d: Deferred[Any]) -> Any:
        done: list[Any] = []

        def settled(result: Any) -> Any:
            done.append(result)
            return result

        d.addBoth(settled)
        while not done:
            self._stub.flush()
            if not done:
                await deferLater(reactor, 0.001, lambda: None)
        return await d


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiClient]:
    """An edge with one configured bucket (no origin) and one key allowed everything."""
    config = parse_config(
        {
            "data_dir": str(tmp_path / "data"),
            "extra_origin_cidrs": ["127.0.0.1/32"],
            "credentials": [{"secret_id": SECRET_ID, "secret_key": SECRET_KEY}],
            "buckets": {BUCKET: {"domains": [DOMAIN]}},
        },
        "test.yaml",
    )
    store = ObjectStore(config.data_dir, config.buckets)
    store.prepare()
    tables = tmp_path / "isp"
    tables.mkdir()
    policy = OriginAddressPolicy(tables, config.extra_origin_cidrs)
    clock: Any = Clock()  # twisted's Clock is not declared to return IDelayedCall
    resolver = OriginResolver(reactor.nameResolver, clock, policy, 60.0)
    copier = OriginCopier(clock, store, config.origin_fetch)
    registry = BucketRegistry(config.buckets, store.state_dir, lambda added, removed: None)
    rules = OriginRules(store.state_dir, config.buckets)
    registry.load()
    rules.load()
    management = ManagementAPI(config.credentials, registry, store, rules, resolver, copier=copier)
    resource = EdgeResource(registry, rules, store, resolver, copier, clock, management)
    yield ApiClient(resource, store)
