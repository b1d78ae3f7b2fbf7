"""SPEC §11 origin modes end to end, on loopback: standby origins, HTTPS origins, followed
redirects and path rewrites, with real origins (some over TLS with a `trustme` CA) and a
real edge whose rules are set through the signed API."""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import trustme
from twisted.internet import reactor as _reactor
from twisted.internet import ssl
from twisted.internet.threads import deferToThread

from edge.admin.cli import call
from edge.testing.origin import FakeOrigin
from tests.integration.conftest import BUCKET, wait_until
from tests.integration.test_management_api import CREDENTIALS, SECRET_ID, SECRET_KEY, client

reactor: Any = _reactor


class Origins:
    """Fake origins on loopback, plain or TLS, all closed at the end of the test."""

    def __init__(self) -> None:
        self._listening: list[tuple[FakeOrigin, Any]] = []

    def start(self, interface: str = "127.0.0.1", tls: Any = None) -> FakeOrigin:
        fake = FakeOrigin(reactor)
        if tls is None:
            port = reactor.listenTCP(0, fake.factory(), interface=interface)
        else:
            port = reactor.listenSSL(0, fake.factory(), tls, interface=interface)
        fake.port = port.getHost().port  # type: ignore[attr-defined]
        fake.address = f"{interface}:{fake.port}"  # type: ignore[attr-defined]
        self._listening.append((fake, port))
        return fake

    def close(self) -> None:
        for fake, port in self._listening:
            fake.drop_all()
            pytest_twisted.blockon(port.stopListening())


@pytest.fixture
def origins() -> Iterator[Origins]:
    made = Origins()
    yield made
    made.close()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rule_xml(
    host: str,
    *,
    parameter: str = "",
    host_info: str = "",
    file_info: str = "",
    rule: str = "",
    prefix: str = "",
) -> bytes:
    return (
        "<OriginConfiguration><OriginRule><RulePriority>1</RulePriority>"
        "<OriginType>Proxy</OriginType><OriginCondition><HTTPStatusCode>404</HTTPStatusCode>"
        f"<Prefix>{prefix}</Prefix></OriginCondition>"
        f"<OriginParameter>{parameter}</OriginParameter>"
        f"<OriginInfo><HostInfo><HostName>{host}</HostName>{host_info}</HostInfo>"
        f"{file_info}</OriginInfo>{rule}</OriginRule></OriginConfiguration>"
    ).encode()


async def api(port: int, method: str, body: bytes = b"") -> Any:
    return await deferToThread(
        call,
        f"http://127.0.0.1:{port}",
        SECRET_ID,
        SECRET_KEY,
        method,
        BUCKET,
        {"origin": ""},
        body,
        "application/xml" if body else None,
    )


async def edge_with_rule(edges: Any, body: bytes, **config: Any) -> Any:
    edge = await edges.start(edges.config(None, credentials=CREDENTIALS, **config))
    reply = await api(edge.port, "PUT", body)
    assert reply.status == 200, reply.body
    return edge


def stored(edge: Any, key: str) -> bytes | None:
    path = edge.data_dir / BUCKET / key
    return path.read_bytes() if path.exists() else None


@pytest_twisted.ensureDeferred
async def test_standby_on_refused_connection(edges, origins):
    """A main origin that refuses the connection sends the copy to StandbyHostName_1; the
    302 still names the main origin, and the object is stored under the key asked for."""
    standby = origins.start()
    standby.serve("/a.txt", b"from the standby")
    main = f"127.0.0.1:{closed_port()}"
    edge = await edge_with_rule(
        edges,
        rule_xml(main, host_info=f"<StandbyHostName_1>{standby.address}</StandbyHostName_1>"),
    )
    reply = await edge.get("a.txt")
    assert reply.status == 302 and reply.header("location") == f"http://{main}/a.txt"
    await edge.copies_done()
    assert stored(edge, "a.txt") == b"from the standby"
    assert standby.requests_for("/a.txt")[0].headers["host"] == standby.address


@pytest_twisted.ensureDeferred
async def test_domain_standbys_are_vetted_when_the_copy_needs_them(edges, origins, captured_events):
    """A domain standby is resolved and judged at copy time: with only 127.0.0.2 admitted,
    `localhost` (127.0.0.1, ::1) is skipped with a warning naming its refused addresses and
    its listener sees no connection; the next standby, an admitted IP, serves the copy."""
    skipped_origin = origins.start()
    standby = origins.start(interface="127.0.0.2")
    standby.serve("/d.txt", b"via the second standby")
    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        main = f"127.0.0.2:{s.getsockname()[1]}"
    host_info = (
        f"<StandbyHostName_1>localhost:{skipped_origin.port}</StandbyHostName_1>"
        f"<StandbyHostName_2>{standby.address}</StandbyHostName_2>"
    )
    edge = await edge_with_rule(edges, rule_xml(main, host_info=host_info), extra=["127.0.0.2/32"])
    await edge.get("d.txt")
    await edge.copies_done()
    assert stored(edge, "d.txt") == b"via the second standby"
    assert skipped_origin.connections == 0
    skipped = [e for e in captured_events if e.get("standby") == f"localhost:{skipped_origin.port}"]
    assert skipped and "127.0.0.1: loopback address" in skipped[0]["reason"]


@pytest_twisted.ensureDeferred
async def test_a_refused_last_standby_leaves_the_failure_before_it(edges, origins, captured_events):
    """When the only standby is refused at copy time, the copy fails with the main
    origin's own answer (its 503), which is what the key's backoff and the breaker see."""
    main = origins.start(interface="127.0.0.2")
    main.serve("/e.txt", b"", status=503)
    host_info = "<StandbyHostName_1>localhost:1</StandbyHostName_1>"
    edge = await edge_with_rule(
        edges, rule_xml(main.address, host_info=host_info), extra=["127.0.0.2/32"]
    )
    await edge.get("e.txt")
    await edge.copies_done()
    assert stored(edge, "e.txt") is None
    reasons = [e.get("reason", "") for e in captured_events if e.get("key") == "e.txt"]
    assert f"{main.address} answered 503" in reasons


@pytest_twisted.ensureDeferred
async def test_standby_on_503_then_the_next_one(edges, origins):
    """A 5xx (the default HTTPStandbyCode) moves on, standby by standby: main 503, first
    standby 500, second standby 200; each was asked once and the last one's body is kept."""
    main, first, second = origins.start(), origins.start(), origins.start()
    main.serve("/b.bin", b"busy", status=503)
    first.serve("/b.bin", b"broken", status=500)
    second.serve("/b.bin", b"x" * 70_000)
    host_info = (
        f"<StandbyHostName_2>{second.address}</StandbyHostName_2>"
        f"<StandbyHostName_1>{first.address}</StandbyHostName_1>"
    )
    edge = await edge_with_rule(edges, rule_xml(main.address, host_info=host_info))
    assert (await edge.get("b.bin")).status == 302
    await edge.copies_done()
    assert stored(edge, "b.bin") == b"x" * 70_000
    assert [len(o.requests_for("/b.bin")) for o in (main, first, second)] == [1, 1, 1]


@pytest_twisted.ensureDeferred
async def test_standby_on_a_listed_404_only(edges, origins):
    """With HTTPStandbyCode 404, a main-origin 404 moves the copy to the standby; a 503,
    not listed, then does not (the default 5xx no longer applies), and nothing is stored."""
    main, standby = origins.start(), origins.start()
    standby.serve("/gone.txt", b"kept elsewhere")
    main.serve("/busy.txt", b"", status=503)
    standby.serve("/busy.txt", b"never asked")
    edge = await edge_with_rule(
        edges,
        rule_xml(
            main.address,
            host_info=f"<StandbyHostName_1>{standby.address}</StandbyHostName_1>",
            rule="<HTTPStandbyCode><StatusCode>404</StatusCode></HTTPStandbyCode>",
        ),
    )
    await edge.get("gone.txt")
    await edge.get("busy.txt")
    await edge.copies_done()
    assert stored(edge, "gone.txt") == b"kept elsewhere"
    assert stored(edge, "busy.txt") is None
    assert standby.requests_for("/busy.txt") == []


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def tls_options(ca: trustme.CA) -> Any:
    """Server-side TLS for a loopback origin whose certificate names 127.0.0.1."""
    issued = ca.issue_cert("127.0.0.1")
    return ssl.PrivateCertificate.loadPEM(issued.private_key_and_cert_chain_pem.bytes()).options()


@pytest_twisted.ensureDeferred
async def test_https_origin_verified_with_ca_file(edges, origins, ca, tmp_path: Path):
    """Protocol HTTPS: the copy is TLS to the pinned address, verified against
    `origin_fetch.ca_file` for the configured host; the 302 uses https://."""
    origin = origins.start(tls=tls_options(ca))
    origin.serve("/secure.txt", b"over TLS")
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    edge = await edge_with_rule(
        edges,
        rule_xml(origin.address, parameter="<Protocol>HTTPS</Protocol>"),
        fetch={"ca_file": str(bundle)},
    )
    reply = await edge.get("secure.txt?v=1")
    assert reply.header("location") == f"https://{origin.address}/secure.txt?v=1"
    await edge.copies_done()
    assert stored(edge, "secure.txt") == b"over TLS"
    assert origin.requests_for("/secure.txt")[0].headers["host"] == origin.address


@pytest_twisted.ensureDeferred
async def test_https_origin_with_a_wrong_ca_stores_nothing(
    edges, origins, ca, tmp_path: Path, captured_events
):
    """A certificate that does not chain to `ca_file` fails the handshake: nothing is
    stored, no temporary file is left, and the warning gives the TLS reason."""
    origin = origins.start(tls=tls_options(ca))
    origin.serve("/secure.txt", b"over TLS")
    bundle = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(bundle))
    edge = await edge_with_rule(
        edges,
        rule_xml(origin.address, parameter="<Protocol>HTTPS</Protocol>"),
        fetch={"ca_file": str(bundle)},
    )
    await edge.get("secure.txt")
    await edge.copies_done()
    assert stored(edge, "secure.txt") is None
    assert origin.requests == []  # no request was sent over the unverified connection
    tmp = Path(edge.store.tmp_dir)
    assert tmp.is_dir() and not list(tmp.rglob("*"))
    reasons = [e["reason"] for e in captured_events if e.get("key") == "secure.txt"]
    assert any("TLS handshake failed" in r and "certificate verify failed" in r for r in reasons)


@pytest_twisted.ensureDeferred
async def test_redirect_followed_to_an_allowed_host(edges, origins):
    """FollowRedirection true: two hops (relative, then absolute to another origin) are
    followed; the object is stored under the client's key with the last hop's bytes."""
    first, second = origins.start(), origins.start()
    first.serve("/old/pic.png", status=301, headers={"Location": "/moved/pic.png"})
    first.serve(
        "/moved/pic.png", status=302, headers={"Location": f"http://{second.address}/pic.png"}
    )
    second.serve("/pic.png", b"final bytes")
    edge = await edge_with_rule(
        edges,
        rule_xml(first.address, parameter="<FollowRedirection>true</FollowRedirection>"),
    )
    assert (await edge.get("old/pic.png")).header("location") == (
        f"http://{first.address}/old/pic.png"
    )
    await edge.copies_done()
    assert stored(edge, "old/pic.png") == b"final bytes"
    assert second.requests_for("/pic.png")[0].headers["host"] == second.address


@pytest_twisted.ensureDeferred
async def test_redirect_to_a_refused_address_is_never_connected_to(edges, origins, captured_events):
    """A hop to 127.0.0.2 (loopback, not in extra_origin_cidrs) ends the copy with a reason
    naming it; the listener there sees no connection at all, and nothing is stored."""
    first = origins.start()
    inside = origins.start(interface="127.0.0.2")
    inside.serve("/secret", b"internal service")
    first.serve("/x.txt", status=302, headers={"Location": f"http://{inside.address}/secret"})
    edge = await edge_with_rule(
        edges,
        rule_xml(first.address, parameter="<FollowRedirection>true</FollowRedirection>"),
    )
    await edge.get("x.txt")
    await edge.copies_done()
    await wait_until(lambda: any(e.get("key") == "x.txt" for e in captured_events))
    assert inside.connections == 0
    assert stored(edge, "x.txt") is None
    reasons = [e.get("reason", "") for e in captured_events if e.get("key") == "x.txt"]
    assert any(f"redirect to {inside.address} refused: 127.0.0.2:" in r for r in reasons)


@pytest_twisted.ensureDeferred
async def test_redirects_stop_after_three_hops(edges, origins, captured_events):
    """An origin that keeps redirecting is asked four times (the first request and three
    hops), then the copy ends saying so, with nothing stored."""
    origin = origins.start()
    origin.serve("/loop", status=302, headers={"Location": "/loop"})
    edge = await edge_with_rule(
        edges, rule_xml(origin.address, parameter="<FollowRedirection>true</FollowRedirection>")
    )
    await edge.get("loop")
    await edge.copies_done()
    assert len(origin.requests_for("/loop")) == 4 and stored(edge, "loop") is None
    reasons = [e.get("reason", "") for e in captured_events if e.get("key") == "loop"]
    assert "origin redirected more than 3 times" in reasons


@pytest_twisted.ensureDeferred
async def test_redirect_to_https_is_verified_for_the_hop(edges, origins, ca, tmp_path: Path):
    """A plain-HTTP origin redirecting to an HTTPS one: the hop is TLS, verified against
    `ca_file` for the hop's host, and its body is stored under the client's key."""
    secure = origins.start(tls=tls_options(ca))
    secure.serve("/real.txt", b"moved to TLS")
    plain = origins.start()
    plain.serve("/a.txt", status=301, headers={"Location": f"https://{secure.address}/real.txt"})
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    edge = await edge_with_rule(
        edges,
        rule_xml(plain.address, parameter="<FollowRedirection>true</FollowRedirection>"),
        fetch={"ca_file": str(bundle)},
    )
    await edge.get("a.txt")
    await edge.copies_done()
    assert stored(edge, "a.txt") == b"moved to TLS"


@pytest_twisted.ensureDeferred
async def test_redirect_not_followed_without_the_option(edges, origins):
    """Without FollowRedirection a 302 from the origin stores nothing (the seed's rule)."""
    first, second = origins.start(), origins.start()
    second.serve("/y.txt", b"elsewhere")
    first.serve("/y.txt", status=302, headers={"Location": f"http://{second.address}/y.txt"})
    edge = await edge_with_rule(edges, rule_xml(first.address))
    await edge.get("y.txt")
    await edge.copies_done()
    assert stored(edge, "y.txt") is None and second.connections == 0


@pytest_twisted.ensureDeferred
async def test_prefix_and_suffix_rewrites(edges, origins):
    """FileInfo rewrites: the origin is asked for the rewritten path, the 302 names it, and
    the object is stored under the key the client asked for."""
    origin = origins.start()
    origin.serve("/static/images/cat.webp", b"prefix and suffix")
    origin.serve("/static/images/dog.png", b"prefix only")
    origin.serve("/css/site.min.css", b"suffix only")
    file_info = (
        "<FileInfo><PrefixConfiguration><Prefix>img/</Prefix>"
        "<ReplacedWithPrefix>static/images/</ReplacedWithPrefix></PrefixConfiguration>"
        "<SuffixConfiguration><Suffix>.jpg</Suffix><ReplacedWithSuffix>.webp"
        "</ReplacedWithSuffix></SuffixConfiguration></FileInfo>"
    )
    edge = await edge_with_rule(edges, rule_xml(origin.address, file_info=file_info))
    edge_css = await edge.get("css/site.min.jpg")
    cases = {
        "img/cat.jpg": "static/images/cat.webp",
        "img/dog.png": "static/images/dog.png",
    }
    for key, path in cases.items():
        reply = await edge.get(key)
        assert reply.header("location") == f"http://{origin.address}/{path}"
    assert edge_css.header("location") == f"http://{origin.address}/css/site.min.webp"
    await edge.copies_done()
    assert stored(edge, "img/cat.jpg") == b"prefix and suffix"
    assert stored(edge, "img/dog.png") == b"prefix only"
    assert stored(edge, "static/images/cat.webp") is None
    assert [r.path for r in origin.requests_for("/static/images/cat.webp")] == [
        "/static/images/cat.webp"
    ]


@pytest_twisted.ensureDeferred
async def test_sdk_rule_round_trips_in_cos_order_and_survives_restart(edges, origin):
    """A rule set with the COS Python SDK's `put_bucket_origin` (every new element) reads
    back through GET ?origin with each element in COS's order, the same after a restart."""
    config = edges.config(None, credentials=CREDENTIALS)
    first = await edges.start(config)
    rule = {
        "RulePriority": "1",
        "OriginType": "Proxy",
        "OriginCondition": {"HTTPStatusCode": "404", "Prefix": "img/"},
        "OriginParameter": {
            "Protocol": "FOLLOW",
            "FollowQueryString": "true",
            "FollowRedirection": "true",
            "HttpRedirectCode": "302",
            "CopyOriginData": "true",
        },
        "OriginInfo": {
            "HostInfo": {
                "HostName": origin.address,
                "StandbyHostName_1": "202.96.128.86",
                "StandbyHostName_2": "standby.example.com:8080",
            },
            "FileInfo": {
                "PrefixConfiguration": {"Prefix": "img/", "ReplacedWithPrefix": "pics/"},
                "SuffixConfiguration": {"Suffix": ".jpg", "ReplacedWithSuffix": ".webp"},
            },
        },
        "HTTPStandbyCode": {"StatusCode": ["404", "503"]},
    }
    cos = client(first.port)
    await deferToThread(
        cos.put_bucket_origin, Bucket=BUCKET, OriginConfiguration={"OriginRule": [rule]}
    )
    before = (await api(first.port, "GET")).body
    node = ET.fromstring(before).find("OriginRule")
    assert node is not None
    assert [c.tag for c in node] == [
        "RulePriority", "OriginType", "OriginCondition", "OriginParameter", "OriginInfo",
        "HTTPStandbyCode",
    ]  # fmt: skip
    assert [c.tag for c in node.find("OriginParameter")] == [
        "Protocol", "FollowQueryString", "FollowRedirection", "HttpRedirectCode",
        "CopyOriginData",
    ]  # fmt: skip
    assert [(c.tag, c.text) for c in node.find("OriginInfo/HostInfo")] == [
        ("HostName", origin.address),
        ("StandbyHostName_1", "202.96.128.86"),
        ("StandbyHostName_2", "standby.example.com:8080"),
    ]
    assert node.findtext("OriginInfo/FileInfo/SuffixConfiguration/ReplacedWithSuffix") == ".webp"
    assert [c.text for c in node.find("HTTPStandbyCode")] == ["404", "503"]
    await first.stop()
    second = await edges.start(config)
    assert (await api(second.port, "GET")).body == before
    reply = await second.get("img/a.jpg")
    assert reply.header("location") == f"http://{origin.address}/pics/a.webp"
