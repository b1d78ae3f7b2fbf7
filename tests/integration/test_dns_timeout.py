"""A real edge whose origin's name never resolves: misses are answered, never held."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from edge.process.tap import build_service, load_policy
from edge.store.folder.store import FolderStore as ObjectStore
from tests.integration.conftest import BUCKET, request
from tests.integration.test_faults import ReactorWithResolver
from tests.test_resolver_timeout import HOST, HeldResolver


@pytest_twisted.ensureDeferred
async def test_edge_miss_with_a_hung_resolver_answers_404_within_dns_timeout(
    edges, captured_events
):
    """A real edge whose resolver never answers: a GET miss on a domain origin is answered
    404 NoSuchKey after `dns_timeout` (0.5 s here), not held forever, and a warning names
    the bucket, the domain and why there is no address."""
    names = HeldResolver()
    config = edges.config(f"{HOST}:8080", fetch={"dns_timeout": 0.5})
    policy = load_policy(config)
    store = ObjectStore(config.data_dir, config.buckets)
    store.prepare()
    service = build_service(config, policy, store, ReactorWithResolver(reactor, names))
    service.startService()
    try:
        port = (await service.getServiceNamed("listener")._waitingForPort).getHost().port
        started = reactor.seconds()
        pending = Deferred.fromCoroutine(request(port, "/miss.txt"))
        pending.addTimeout(10, reactor)
        reply = await pending
        took = reactor.seconds() - started
        assert reply.status == 404 and b"<Code>NoSuchKey</Code>" in reply.body
        assert 0.4 <= took < 3.0
        assert len(names.held) == 1
        warnings = [e for e in captured_events if e.get("domain") == HOST and "bucket" in e]
        assert warnings and warnings[0]["bucket"] == BUCKET
        assert "dns_timeout" in " ".join(warnings[0]["addresses"])
    finally:
        await service.stopService()
