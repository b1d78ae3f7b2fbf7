"""Provenance and refresh on two edge nodes sharing SeaweedFS and Redis: what a copy on one
node recorded is what the other serves and refreshes by."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted

from tests.cluster import test_nodes
from tests.cluster.nodes import Node
from tests.integration.conftest import BUCKET, wait_until

pytestmark = pytest.mark.cluster

# The node tests' fixtures: a loopback origin, and a cluster of nodes on the session's store.
origin = test_nodes.origin
cluster = test_nodes.cluster
_warnings_shown = test_nodes._warnings_shown

LAST_MODIFIED = "Tue, 01 Dec 2026 10:00:00 GMT"


async def refresh(node: Node, *keys: str, **params: str) -> dict[str, Any]:
    body = json.dumps({"keys": list(keys)}).encode()
    reply = await node.signed("POST", "/", BUCKET, {"cosedge-refresh": "", **params}, body)
    assert reply.status == 200, reply.body
    return dict(json.loads(reply.body))


@pytest_twisted.ensureDeferred
async def test_refresh_across_nodes_keeps_replaces_and_deletes(cluster, origin):
    """A copy made on A is served by B with the origin's Content-Type; B's refresh asks the
    origin with the ETag A recorded (304: kept), a changed origin object is replaced and
    served new by A, and a vanished one is deleted with delete-missing."""
    headers = {"ETag": '"v1"', "Last-Modified": LAST_MODIFIED, "Content-Type": "text/x-one"}
    origin.serve("/doc.bin", b"version 1", headers=headers, conditional=True)
    a, b = await test_nodes._two(cluster)
    assert (await a.get("doc.bin")).status == 302
    await wait_until(lambda: not a.copier.in_flight())
    hit = await b.get("doc.bin")
    assert (hit.status, hit.body) == (200, b"version 1")
    assert hit.header("Content-Type") == "text/x-one"

    answer = await refresh(b, "doc.bin")
    assert answer["results"][0]["result"] == "kept"
    assert origin.requests_for("/doc.bin")[-1].headers["if-none-match"] == '"v1"'

    headers = {"ETag": '"v2"', "Last-Modified": LAST_MODIFIED, "Content-Type": "text/x-two"}
    origin.serve("/doc.bin", b"version 2", headers=headers, conditional=True)
    answer = await refresh(b, "doc.bin")
    assert answer["results"][0]["result"] == "replaced"
    hit = await a.get("doc.bin")
    assert (hit.body, hit.header("Content-Type")) == (b"version 2", "text/x-two")

    del origin.replies["/doc.bin"]
    answer = await refresh(a, "doc.bin", **{"delete-missing": "true"})
    assert answer["results"][0]["result"] == "deleted"
    assert (await b.get("doc.bin")).status == 302
