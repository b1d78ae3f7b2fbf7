"""The public resource tree in memory: a real folder store in tmp_path, no processes.

The tree is served through `treq.testing.StubTreq` by an `EdgeSite`, so requests get their
ids, their body sinks and their errors as on a socket; DNS answers come from a
`ScriptedResolver` and the copier's origin requests never answer (a miss's copy is seen
starting, nothing more). Every time-based thing runs on a `Clock`, never the reactor.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.web.iweb import IAgent
from zope.interface import implementer

from edge.api.buckets import BucketRegistry
from edge.api.management import ManagementAPI
from edge.api.rules import OriginRules
from edge.config import EdgeConfig, parse_config
from edge.origin.copier import OriginCopier, OriginResolver
from edge.process.tap import build_policy
from edge.store.folder.store import FolderStore as ObjectStore
from edge.testing.resolver import ScriptedResolver
from edge.web.bodies import BodySpools, SpoolBudget
from edge.web.root import EdgeResource
from edge.web.site import EdgeSite

BUCKET = "examplebucket-1250000000"
DOMAIN = "examplebucket-1250000000.file.myqcloud.com"
PATH_BUCKET = "other-1250000000"  # no domain: chosen by the path or the API host form
ORIGIN_HOST = "origin.example"
ORIGIN_IP = "203.0.113.7"
SECRET_ID = "AKIDcosedgeWebTree"
SECRET_KEY = "web-tree-secret"


@implementer(IAgent)
class HangingAgent:
    """An origin client whose requests never answer: a started copy stays started."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []

    def request(self, method: bytes, uri: bytes, headers: Any = None, body: Any = None) -> Any:
        self.requests.append(uri)
        return Deferred()


@dataclass
class Tree:
    config: EdgeConfig
    store: ObjectStore
    root: EdgeResource
    copier: OriginCopier
    agent: HangingAgent
    http: Any  # a StubTreq: its methods are set per instance, unseen by mypy

    def drop_file(self, bucket: str, key: str, data: bytes) -> None:
        """Put an object in the store the way an operator does: a file in the folder."""
        path = Path(self.store.layout.path_for(bucket, key))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _config(data_dir: Path) -> EdgeConfig:
    return parse_config(
        {
            "listen": "tcp:0:interface=127.0.0.1",
            "data_dir": str(data_dir),
            "extra_origin_cidrs": ["203.0.113.0/24"],
            "credentials": [{"secret_id": SECRET_ID, "secret_key": SECRET_KEY}],
            "buckets": {
                BUCKET: {
                    "domains": [DOMAIN],
                    "origin": {"enabled": True, "address": f"{ORIGIN_HOST}:8080"},
                },
                PATH_BUCKET: {},
            },
        },
        "test.yaml",
    )


@pytest.fixture(scope="session")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The real origin address policy (ISP tables loaded once: it takes most of a second)."""
    return build_policy(_config(tmp_path_factory.mktemp("policy")))


@pytest.fixture
def tree(tmp_path: Path, policy: Any) -> Iterator[Tree]:
    config = _config(tmp_path / "data")
    store = ObjectStore(config.data_dir, config.buckets)
    store.prepare()
    clock: Any = Clock()  # Any: Twisted's stubs for Clock do not match the resolver's _Clock
    registry = BucketRegistry(config.buckets, store.state_dir)
    rules = OriginRules(store.state_dir, config.buckets)
    registry.load()
    rules.load()
    names = ScriptedResolver({ORIGIN_HOST: [[ORIGIN_IP]]})
    resolver = OriginResolver(names, clock, policy, ttl=60)
    agent = HangingAgent()
    copier = OriginCopier(
        clock, store, config.origin_fetch, agent_factory=lambda address, port, meter: agent
    )
    api = ManagementAPI(config.credentials, registry, store, rules, resolver, copier=copier)
    spools = BodySpools(store.tmp_dir, SpoolBudget(config.limits.spool_bytes))
    root = EdgeResource(registry, rules, store, resolver, copier, clock, api, spools)
    http = StubTreq(root)
    # StubTreq serves through a plain `Site`; the edge's requests need `EdgeSite`'s
    # (request ids, body sinks chosen at the end of the headers, COS XML for bugs).
    agent_of_stub = http._agent
    agent_of_stub._serverFactory = EdgeSite(root, reactor=agent_of_stub._memoryReactor)
    yield Tree(config, store, root, copier, agent, http)
