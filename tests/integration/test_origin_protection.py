"""Origin protection against real loopback origins: a 404 is not asked again, a failing
origin trips its breaker and recovers through one probe, a slow origin does not hold a fast
one's copies; origins that would loop are refused in the config and the API; and the dry
run `cosedge-admin origin check` judges without saving."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from edge.admin.cli import call
from edge.config import ConfigError, parse_config
from edge.process.tap import build_policy
from edge.testing.origin import FakeOrigin
from tests.integration.conftest import BUCKET, DOMAIN, reactor, request, wait_until
from tests.integration.test_admin_cli import SECRET_ID, SECRET_KEY, admin

CREDENTIALS = [{"secret_id": SECRET_ID, "secret_key": SECRET_KEY}]


@pytest_twisted.ensureDeferred
async def test_a_404_key_is_fetched_once_within_not_found_ttl(edges, origin):
    """Every miss of a key the origin answered 404 is redirected, but the origin is asked
    once while not_found_ttl runs; another key is still copied."""
    origin.serve("/gone.txt", b"", status=404)
    origin.serve("/here.txt", b"here")
    edge = await edges.start(edges.config(origin.address, fetch={"not_found_ttl": 60}))
    for _ in range(4):
        assert (await edge.get("gone.txt")).status == 302
        await edge.copies_done()
    assert len(origin.requests_for("/gone.txt")) == 1
    assert edge.copier.counters["not_found"] == 3
    assert (await edge.get("here.txt")).status == 302
    await edge.copies_done()
    assert (edge.data_dir / BUCKET / "here.txt").read_bytes() == b"here"


@pytest_twisted.ensureDeferred
async def test_a_503_origin_trips_the_breaker_and_recovers_through_one_probe(
    edges, origin, captured_events
):
    """Three 503s within the window open the breaker: misses of other keys are still
    redirected but ask the origin nothing; after `open` seconds one probe goes, and the
    origin healthy again, the breaker closes and copies resume. Each change is one event."""
    for i in range(6):
        origin.serve(f"/k{i}", b"down", status=503)
    breaker = {"failures": 3, "window": 30, "open": 0.5}
    edge = await edges.start(edges.config(origin.address, fetch={"breaker": breaker}))
    for i in range(3):
        assert (await edge.get(f"k{i}")).status == 302
        await edge.copies_done()
    assert len(origin.requests) == 3
    assert edge.copier.protection.breakers.state(f"{origin.address}").value == "open"
    for i in (3, 4):
        assert (await edge.get(f"k{i}")).status == 302
    await edge.copies_done()
    assert len(origin.requests) == 3 and edge.copier.counters["breaker_open"] == 2
    origin.serve("/k5", b"healthy")
    origin.serve("/k6", b"also")
    await deferLater(reactor, 0.6, lambda: None)
    assert (await edge.get("k5")).status == 302  # the probe
    await edge.copies_done()
    assert (edge.data_dir / BUCKET / "k5").read_bytes() == b"healthy"
    assert (await edge.get("k6")).status == 302
    await edge.copies_done()
    assert (edge.data_dir / BUCKET / "k6").read_bytes() == b"also"
    assert len(origin.requests) == 5
    states = [e["breaker"] for e in captured_events if "breaker" in e]
    assert states == ["open", "half-open", "closed"]


@pytest.fixture
def slow_origin() -> Iterator[FakeOrigin]:
    fake = FakeOrigin(reactor)
    listening = reactor.listenTCP(0, fake.factory(), interface="127.0.0.1")
    fake.address = f"127.0.0.1:{listening.getHost().port}"  # type: ignore[attr-defined]
    yield fake
    fake.drop_all()
    pytest_twisted.blockon(listening.stopListening())


@pytest_twisted.ensureDeferred
async def test_a_slow_origin_does_not_delay_a_fast_ones_copies(edges, origin, slow_origin):
    """With per_origin_concurrency 2 under concurrency 4, a slow origin's burst of misses
    holds two slots; the fast origin's copies start at once and are stored while the slow
    ones still wait for headers."""
    for i in range(4):
        slow_origin.serve(f"/s{i}", b"slow", headers_delay=0.8)
    for i in range(3):
        origin.serve(f"/f{i}", b"fast")
    raw: dict[str, Any] = {
        "listen": "tcp:0:interface=127.0.0.1",
        "data_dir": str(edges.tmp_path / "data"),
        "extra_origin_cidrs": ["127.0.0.1/32"],
        "origin_fetch": {"concurrency": 4, "per_origin_concurrency": 2},
        "buckets": {
            BUCKET: {"domains": [DOMAIN], "origin": {"address": slow_origin.address}},
            "fast-1250000000": {
                "domains": ["fast.example.com"],
                "origin": {"address": origin.address},
            },
        },
    }
    edge = await edges.start(parse_config(raw, "test.yaml"))
    for i in range(4):
        assert (await edge.get(f"s{i}")).status == 302
    assert len(edge.copier.in_flight()) == 4
    for i in range(3):
        assert (await request(edge.port, f"/f{i}", host="fast.example.com")).status == 302
    fast = edge.data_dir / "fast-1250000000"
    await wait_until(lambda: all((fast / f"f{i}").exists() for i in range(3)), timeout=0.7)
    assert not any((edge.data_dir / BUCKET / f"s{i}").exists() for i in range(4))
    assert len(slow_origin.requests) == 2  # its cap: the other two still queue
    await edge.copies_done()
    assert all((edge.data_dir / BUCKET / f"s{i}").exists() for i in range(4))


def test_config_refuses_an_origin_that_would_loop(tmp_path):
    """An origin that is the bucket's own domain, or the address and port the edge listens
    on, stops the config with a message saying it would loop."""
    raw = {
        "listen": "tcp:18080:interface=127.0.0.1",
        "data_dir": str(tmp_path),
        "extra_origin_cidrs": ["127.0.0.1/32"],
        "buckets": {
            BUCKET: {"domains": [DOMAIN], "origin": {"address": DOMAIN}},
            "other-1250000000": {"origin": {"address": "127.0.0.1:18080"}},
        },
    }
    with pytest.raises(ConfigError) as raised:
        build_policy(parse_config(raw, "loop.yaml"))
    problems = [str(p) for p in raised.value.problems]
    assert problems == [
        f"loop.yaml: buckets.{BUCKET}.origin.address: origin {DOMAIN} would loop: "
        "it is one of the bucket's own domains",
        "loop.yaml: buckets.other-1250000000.origin.address: origin 127.0.0.1:18080 would "
        "loop: 127.0.0.1:18080 is where this edge listens (127.0.0.1:18080)",
    ]


def _rule_xml(host: str) -> bytes:
    return (
        "<OriginConfiguration><OriginRule><RulePriority>1</RulePriority>"
        "<OriginType>Proxy</OriginType><OriginCondition><HTTPStatusCode>404</HTTPStatusCode>"
        "</OriginCondition><OriginParameter><Protocol>HTTP</Protocol></OriginParameter>"
        f"<OriginInfo><HostInfo><HostName>{host}</HostName></HostInfo></OriginInfo>"
        "</OriginRule></OriginConfiguration>"
    ).encode()


@pytest_twisted.ensureDeferred
async def test_put_origin_refuses_a_loop_with_400(edges):
    """PUT ?origin naming the bucket's own domain, or the edge's own address and port, is
    400 InvalidArgument in COS's error shape, saying it would loop; nothing is saved."""
    edge = await edges.start(edges.config(None, credentials=CREDENTIALS))
    endpoint = f"http://127.0.0.1:{edge.port}"
    for host, says in (
        (DOMAIN, "one of the bucket's own domains"),
        (f"127.0.0.1:{edge.port}", f"127.0.0.1:{edge.port} is where this edge listens"),
    ):
        reply = await deferToThread(
            call,
            endpoint,
            SECRET_ID,
            SECRET_KEY,
            "PUT",
            BUCKET,
            {"origin": ""},
            _rule_xml(host),
            "application/xml",
        )
        assert reply.status == 400
        assert b"<Code>InvalidArgument</Code>" in reply.body and b"would loop" in reply.body
        assert says.encode() in reply.body
    assert (await edge.get("anything")).status == 404  # no rule was saved


@pytest_twisted.ensureDeferred
async def test_origin_check_exit_codes_and_json(edges, origin):
    """`origin check`: an accepted address exits 0 and, with --key, reports the origin's
    HEAD answer; a refused or looping address exits 1 with each address's verdict; a
    malformed one exits 2; nothing is saved and nothing is copied."""
    origin.serve("/probe.txt", b"12345", headers={"ETag": '"abc"'})
    edge = await edges.start(edges.config(origin.address, credentials=CREDENTIALS))
    out, err, code = await admin(
        edge.port, "origin", "check", BUCKET, origin.address, "--key", "probe.txt", "--json"
    )
    assert code == 0, err
    answer = json.loads(out)
    assert answer["accepted"] is True and answer["reason"] is None
    assert [a["address"] for a in answer["addresses"]] == ["127.0.0.1"]
    assert answer["addresses"][0]["accepted"] is True
    probe = answer["probe"]
    assert (probe["status"], probe["length"], probe["etag"]) == (200, 5, '"abc"')
    assert [r.method for r in origin.requests] == ["HEAD"]
    out, _, code = await admin(edge.port, "origin", "check", BUCKET, "192.168.1.10")
    assert code == 1
    assert "refused" in out and "192.168.1.10\trefused\t-\tprivate address" in out
    out, _, code = await admin(
        edge.port, "origin", "check", BUCKET, f"127.0.0.1:{edge.port}", "--json"
    )
    assert code == 1 and "would loop" in json.loads(out)["reason"]
    _, err, code = await admin(edge.port, "origin", "check", BUCKET, "http://x.example.com/")
    assert code == 2 and "has a scheme" in err
    assert not (edge.data_dir / BUCKET / "probe.txt").exists()
    assert (await edge.get("probe.txt")).header("location") == (
        f"http://{origin.address}/probe.txt"  # the YAML rule still in force
    )
    await edge.copies_done()
