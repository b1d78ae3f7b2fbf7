"""A brand-new cluster node before its first pull of the shared state (SPEC §8), against a
real SeaweedFS and Redis: it cannot tell a bucket or rule made on another node from none,
so it answers 503 ServiceUnavailable rather than 404, in every process; once it has pulled
(or when it kept a copy from an earlier run) it answers as any node does."""

from __future__ import annotations

import signal
import time

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from edge.api.signature import sign
from edge.testing.process import start_twistd, wait_ready
from tests.cluster import test_nodes
from tests.cluster.nodes import NO_RULE, ORIGIN_XML, SECRET, Cluster, Node, api_host, restart_store
from tests.integration.conftest import Reply, request

pytestmark = pytest.mark.cluster

# The node tests' fixtures: a loopback origin, and a cluster of nodes on the session's store.
origin = test_nodes.origin
cluster = test_nodes.cluster
_warnings_shown = test_nodes._warnings_shown

LATE = "late-1250000000"  # made through the API on node A, unknown to a new node at first
UNAVAILABLE = b"<Code>ServiceUnavailable</Code>"


async def _made_on_a(cluster: Cluster) -> None:
    """Node A makes LATE and gives NO_RULE (a configured bucket without origin) a rule,
    then stops: what a new node must learn from the state bucket alone."""
    a = await cluster.start("a")
    assert (await a.signed("PUT", "/", LATE, {})).status == 200
    rules = ORIGIN_XML.format(host=cluster.origin).encode()
    assert (await a.signed("PUT", "/", NO_RULE, {"origin": ""}, rules)).status == 200
    await a.stop()


async def _list_buckets(node: Node) -> Reply:
    """Signed GET Service (ListBuckets), on a Host that names no bucket."""
    host = "service.cos.myqcloud.com"
    auth = sign(*SECRET, "GET", "/", {}, {"host": host})
    return await request(node.port, "/", host=host, headers={"Authorization": auth})


@pytest_twisted.ensureDeferred
async def test_a_new_node_answers_503_until_its_first_pull_then_serves(cluster, origin):
    """A new node started while the store is out: a bucket made on A (anonymous and
    signed), NO_RULE's rules and ListBuckets are COS XML 503, never 404, while a configured
    bucket with a rule still redirects; the store back, the node serves A's bucket and
    rule. Restarted with the store out again, it answers from its copy at once (404 for a
    bucket that is nowhere)."""
    await _made_on_a(cluster)
    await deferToThread(cluster.seaweed.stop)
    try:
        b = await cluster.start("b")
        anonymous = await b.get("k.txt", host=api_host(LATE))
        assert anonymous.status == 503 and UNAVAILABLE in anonymous.body, anonymous.body
        assert (await b.signed("HEAD", "/", LATE, {})).status == 503
        listing = await b.signed("GET", "/", LATE, {})
        assert listing.status == 503 and UNAVAILABLE in listing.body, listing.body
        rules = await b.signed("GET", "/", NO_RULE, {"origin": ""})
        assert rules.status == 503 and UNAVAILABLE in rules.body, rules.body
        buckets = await _list_buckets(b)
        assert buckets.status == 503 and UNAVAILABLE in buckets.body, buckets.body
        assert (await b.get("k.txt")).status == 302  # configured, with a rule: as usual
        await deferToThread(restart_store, cluster.seaweed)
        await test_nodes._within(20.0, lambda: test_nodes._head_bucket(b, LATE))
        missing = await b.get("k.txt", host=api_host(LATE))
        assert missing.status == 404 and b"<Code>NoSuchKey</Code>" in missing.body
        rules = await b.signed("GET", "/", NO_RULE, {"origin": ""})
        assert rules.status == 200 and cluster.origin.encode() in rules.body, rules.body
        assert LATE.encode() in (await _list_buckets(b)).body
        await b.stop()

        await deferToThread(cluster.seaweed.stop)
        again = await cluster.start("b")
        assert (await again.signed("HEAD", "/", LATE, {})).status == 200
        rules = await again.signed("GET", "/", NO_RULE, {"origin": ""})
        assert rules.status == 200 and cluster.origin.encode() in rules.body, rules.body
        unknown = await again.get("k.txt", host=api_host("nosuch-1250000000"))
        assert unknown.status == 404 and b"<Code>NoSuchBucket</Code>" in unknown.body
        buckets = await _list_buckets(again)
        assert buckets.status == 200 and LATE.encode() in buckets.body, buckets.body
    finally:
        if cluster.seaweed.stopped:
            await deferToThread(restart_store, cluster.seaweed)


@pytest_twisted.ensureDeferred
async def test_a_node_that_pulled_nothing_has_a_copy_after_a_restart(cluster, origin):
    """A cluster with no API-made state at all: the first pull brings nothing, yet counts;
    a bucket that is nowhere is 404 NoSuchBucket then, and still at once after a restart
    with the store out (not 503, as for a node that never pulled)."""
    node = await cluster.start("n")
    nowhere = api_host("nosuch-1250000000")

    async def no_such_bucket(n: Node) -> bool:
        reply = await n.get("k.txt", host=nowhere)
        return reply.status == 404 and b"<Code>NoSuchBucket</Code>" in reply.body

    await test_nodes._within(20.0, lambda: no_such_bucket(node))
    await node.stop()
    await deferToThread(cluster.seaweed.stop)
    try:
        again = await cluster.start("n")
        assert await no_such_bucket(again)
    finally:
        await deferToThread(restart_store, cluster.seaweed)


def _process_of(reply: Reply) -> str:
    """Which process answered: request ids are a per-process prefix and a 12-digit counter."""
    return (reply.header("x-cos-request-id") or "")[:-12]


async def _answers_from_both(port: int, code: bytes) -> None:
    """Ask for a key of LATE over fresh connections until both processes answered; every
    answer must carry `code`, and none may be NoSuchBucket."""
    seen: set[str] = set()
    for _ in range(200):
        reply = await request(port, "/k.txt", host=api_host(LATE))
        assert b"NoSuchBucket" not in reply.body, reply.body
        assert code in reply.body, reply.body
        seen.add(_process_of(reply))
        if len(seen) == 2:
            return
    raise AssertionError(f"only {seen} answered")


@pytest_twisted.ensureDeferred
async def test_every_process_of_a_new_node_answers_503_until_the_first_pull(cluster, origin):
    """A new twistd node with `workers: 2` started while the store is out: the main process
    and the worker both answer a request in A's bucket 503 (the worker learns of the main
    process's first pull from the state's stamps), and never NoSuchBucket; the store back,
    both answer from the bucket (NoSuchKey for a key it lacks)."""
    await _made_on_a(cluster)
    await deferToThread(cluster.seaweed.stop)
    proc = start_twistd("--config", str(cluster.write_config("w", workers=2)), cwd=cluster.tmp_path)
    try:
        port, output = await deferToThread(wait_ready, proc)
        deadline = time.monotonic() + 30
        while "cosedge worker" not in output.text():
            assert time.monotonic() < deadline, output.text()
            await test_nodes._sleep(0.05)
        await _answers_from_both(port, UNAVAILABLE)
        await deferToThread(restart_store, cluster.seaweed)
        deadline = time.monotonic() + 20
        while True:
            reply = await request(port, "/k.txt", host=api_host(LATE))
            assert b"NoSuchBucket" not in reply.body, reply.body
            if reply.status == 404:
                break
            assert time.monotonic() < deadline, reply.body
            await test_nodes._sleep(0.05)
        await test_nodes._sleep(1.0)  # the worker's state watcher ticks every 0.5 s
        await _answers_from_both(port, b"<Code>NoSuchKey</Code>")
    finally:
        proc.send_signal(signal.SIGTERM)
        await deferToThread(proc.wait, 30)
        if cluster.seaweed.stopped:
            await deferToThread(restart_store, cluster.seaweed)
