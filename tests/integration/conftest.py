"""Fixtures for integration tests: a real edge and a real origin, both on 127.0.0.1 port 0."""

from __future__ import annotations

import http.client
import io
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool
from twisted.web.http_headers import Headers

from edge.config import EdgeConfig, parse_config
from edge.origin.copier import OriginCopier
from edge.process.tap import build_service, load_policy
from edge.store.folder.store import FolderStore as ObjectStore
from edge.testing.origin import FakeOrigin
from edge.testing.process import twistd_env

# Twisted's reactor stubs are stricter than its runtime (factories, addresses).
reactor: Any = _reactor

BUCKET = "examplebucket-1250000000"
DOMAIN = "examplebucket-1250000000.file.myqcloud.com"


@dataclass
class Reply:
    status: int
    headers: Headers
    body: bytes
    length: int | None = None

    def header(self, name: str) -> str | None:
        if name.lower() == "content-length":
            # Twisted's client moves Content-Length out of the headers into `length`.
            return None if self.length is None else str(self.length)
        values = self.headers.getRawHeaders(name.encode())
        return values[0].decode("latin-1") if values else None


async def request(
    port: int,
    path: str | bytes,
    *,
    method: str = "GET",
    host: str | None = DOMAIN,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Reply:
    """One request over a fresh connection; the path is sent exactly as given.

    HEAD goes through `http.client` in a thread: Twisted's client reports no length for it.
    """
    if method == "HEAD":
        return await deferToThread(_blocking_request, port, path, method, host, headers or {})
    pool = HTTPConnectionPool(reactor, persistent=False)
    agent = Agent(reactor, pool=pool)
    raw_path = path if isinstance(path, bytes) else path.encode("utf-8")
    all_headers = Headers()
    if host is not None:
        all_headers.setRawHeaders(b"host", [host.encode()])
    for name, value in (headers or {}).items():
        all_headers.setRawHeaders(name.encode(), [value.encode()])
    producer = None if body is None else FileBodyProducer(io.BytesIO(body))
    response = await agent.request(
        method.encode(), b"http://127.0.0.1:%d%s" % (port, raw_path), all_headers, producer
    )
    data = await treq.content(response) if method != "HEAD" else b""
    length = response.length if isinstance(response.length, int) else None
    return Reply(response.code, response.headers, data, length)


def _blocking_request(
    port: int, path: str | bytes, method: str, host: str | None, headers: dict[str, str]
) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(
            method,
            path if isinstance(path, str) else path.decode("latin-1"),
            skip_host=True,
            skip_accept_encoding=True,
        )
        if host is not None:
            conn.putheader("Host", host)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        data = response.read()
        raw = Headers({k.encode(): [v.encode("latin-1")] for k, v in response.getheaders()})
        length = response.getheader("content-length")
        return Reply(response.status, raw, data, None if length is None else int(length))
    finally:
        conn.close()


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll until `predicate()` holds; fail the test after `timeout` seconds."""
    waited = 0.0
    while not predicate():
        if waited >= timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        await deferLater(reactor, 0.02, lambda: None)
        waited += 0.02


@dataclass
class RunningEdge:
    config: EdgeConfig
    service: Any
    port: int
    store: ObjectStore
    copier: OriginCopier
    data_dir: Path
    policy: Any
    stopped: bool = False

    async def get(self, key: str, **kwargs: Any) -> Reply:
        return await request(self.port, "/" + key, **kwargs)

    async def copies_done(self, timeout: float = 10.0) -> None:
        await wait_until(lambda: not self.copier.in_flight(), timeout)

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.service.stopService()


@dataclass
class EdgeFactory:
    tmp_path: Path
    running: list[RunningEdge] = field(default_factory=list)

    def config(
        self,
        origin: str | None,
        *,
        extra: list[str] | None = None,
        enabled: bool = True,
        fetch: dict[str, Any] | None = None,
        data_dir: Path | None = None,
        credentials: list[dict[str, Any]] | None = None,
    ) -> EdgeConfig:
        bucket: dict[str, Any] = {"domains": [DOMAIN]}
        if origin is not None:
            bucket["origin"] = {"enabled": enabled, "address": origin}
        raw: dict[str, Any] = {
            "listen": "tcp:0:interface=127.0.0.1",
            "data_dir": str(data_dir or self.tmp_path / "data"),
            "extra_origin_cidrs": ["127.0.0.1/32"] if extra is None else extra,
            "buckets": {BUCKET: bucket},
        }
        if fetch:
            raw["origin_fetch"] = fetch
        if credentials:
            raw["credentials"] = credentials
        return parse_config(raw, "test.yaml")

    async def start(self, config: EdgeConfig) -> RunningEdge:
        policy = load_policy(config)
        store = ObjectStore(config.data_dir, config.buckets)
        store.prepare()
        service = build_service(config, policy, store, reactor)
        service.startService()
        listener = service.getServiceNamed("listener")
        port = await listener._waitingForPort
        edge = RunningEdge(
            config=config,
            service=service,
            port=port.getHost().port,
            store=store,
            copier=service.getServiceNamed("origin-copier"),
            data_dir=Path(store.data_dir),
            policy=policy,
        )
        self.running.append(edge)
        return edge


@pytest.fixture
def origin() -> Iterator[FakeOrigin]:
    fake = FakeOrigin(reactor)
    listening = reactor.listenTCP(0, fake.factory(), interface="127.0.0.1")
    fake.port = listening.getHost().port  # type: ignore[attr-defined]
    fake.address = f"127.0.0.1:{fake.port}"  # type: ignore[attr-defined]
    yield fake
    fake.drop_all()
    pytest_twisted.blockon(listening.stopListening())


@pytest.fixture
def edges(tmp_path: Path) -> Iterator[EdgeFactory]:
    factory = EdgeFactory(tmp_path)
    yield factory
    for edge in factory.running:
        if not edge.stopped:
            pytest_twisted.blockon(Deferred.fromCoroutine(edge.stop()))


@pytest.fixture
def captured_events() -> Iterator[list[dict[str, Any]]]:
    """Every log event emitted during the test, for assertions on structured fields."""
    events: list[dict[str, Any]] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    yield events
    globalLogPublisher.removeObserver(observer)


async def run_admin(port: int, secret_id: str, secret_key: str, *args: str) -> tuple[str, str, int]:
    """`cosedge-admin --endpoint http://127.0.0.1:PORT ARGS` as an operator runs it, in
    its own process with the keys in its environment: stdout, stderr and exit status."""
    env = twistd_env()
    env.update(COSEDGE_SECRET_ID=secret_id, COSEDGE_SECRET_KEY=secret_key)
    out, err, code = await getProcessOutputAndValue(
        sys.executable,
        ["-m", "edge.admin.cli", "--endpoint", f"http://127.0.0.1:{port}", *args],
        env=env,
        path=os.getcwd(),
    )
    return out.decode(), err.decode(), code
