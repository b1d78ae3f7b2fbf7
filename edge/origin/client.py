"""The origin-client service: how the edge opens connections to an origin.

One long-lived `OriginClient` owns the `HTTPConnectionPool` every copy's agent uses, with
client factories that do not log "Starting/Stopping factory" per copy, and closes the
pool's connections when the edge stops. Each agent connects through a pinned endpoint to
one vetted address whatever host the URL names, and can count the raw bytes its
connection delivered (`WireMeter`), which is how a body that ran past its Content-Length
is told apart from a good one. An HTTPS origin's connection is TLS over that same pinned
TCP connection, verified for the configured host name (also the SNI) against the system
trust store or `origin_fetch.ca_file`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IReactorTCP,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import connectionDone
from twisted.internet.tcp import Connection
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.client import URI, Agent, HTTPConnectionPool, _HTTP11ClientFactory
from twisted.web.iweb import IAgent, IAgentEndpointFactory
from zope.interface import implementer

if TYPE_CHECKING:  # pyOpenSSL is needed by HTTPS origins only, so imported when used
    from twisted.internet._sslverify import IOpenSSLTrustRoot


class WireMeter:
    """Counts the bytes one origin connection delivered, below HTTP framing.

    Twisted's client ends a body at Content-Length and silently drops whatever the origin
    sent beyond it; only the raw count shows that the origin's idea of the object differs
    from its header, which is reason enough not to store it.
    """

    _MAX_HEAD = 1024 * 1024

    def __init__(self) -> None:
        self.total = 0
        self.header_length: int | None = None
        self._head = b""
        self.closed: Deferred[None] = Deferred()

    def received(self, data: bytes) -> None:
        self.total += len(data)
        if self.header_length is None and len(self._head) < self._MAX_HEAD:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end >= 0:
                self.header_length = end + 4
                self._head = b""

    def lost(self) -> None:
        if not self.closed.called:
            self.closed.callback(None)

    @property
    def body_length(self) -> int | None:
        return None if self.header_length is None else self.total - self.header_length


READ_SIZE = 256 * 1024  # one read of an origin socket: Twisted's 64 KiB cost a body's way
# through the HTTP client's layers and the write-behind four times as often


class _MeteredProtocol(ProtocolWrapper):
    factory: _MeteredFactory

    def makeConnection(self, transport: Any) -> None:
        tcp = transport
        while tcp is not None and not isinstance(tcp, Connection):
            tcp = getattr(tcp, "transport", None)  # under TLS, the TCP connection beneath
        if tcp is not None:
            tcp.bufferSize = READ_SIZE
        super().makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        self.factory.meter.received(data)
        super().dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: B008
        super().connectionLost(reason)
        self.factory.meter.lost()


class _MeteredFactory(WrappingFactory):
    protocol = _MeteredProtocol
    noisy = False  # one copy is one connection: "Starting factory" per copy is noise

    def __init__(self, wrapped: Any, meter: WireMeter) -> None:
        super().__init__(wrapped)
        self.meter = meter


@implementer(IStreamClientEndpoint)
class _MeteredEndpoint:
    def __init__(self, endpoint: IStreamClientEndpoint, meter: WireMeter) -> None:
        self._endpoint = endpoint
        self._meter = meter

    def connect(self, factory: Any) -> Deferred[Any]:
        d: Deferred[Any] = self._endpoint.connect(_MeteredFactory(factory, self._meter))
        # The HTTP client needs its own protocol back, not the wrapper around it.
        return d.addCallback(lambda wrapper: wrapper.wrappedProtocol)


@implementer(IAgentEndpointFactory)
class PinnedEndpointFactory:
    """Connects every request to one vetted address, whatever host the URL names.

    The URL keeps the configured origin (so `Host:` is what the operator wrote) while the TCP
    connection goes to the address that passed the ISP check: there is no second resolution.
    """

    def __init__(
        self,
        reactor: IReactorTCP,
        address: str,
        port: int,
        timeout: float,
        meter: WireMeter | None = None,
        tls: IOpenSSLClientConnectionCreator | None = None,
    ) -> None:
        self._reactor = reactor
        self._address = address
        self._port = port
        self._timeout = timeout
        self._meter = meter
        self._tls = tls

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        kind = TCP6ClientEndpoint if ":" in self._address else TCP4ClientEndpoint
        endpoint: IStreamClientEndpoint
        endpoint = kind(self._reactor, self._address, self._port, timeout=self._timeout)
        if self._tls is not None:  # TLS inside the meter: it counts the plaintext bytes
            endpoint = wrapClientTLS(self._tls, endpoint)
        if self._meter is not None:
            return _MeteredEndpoint(endpoint, self._meter)
        return endpoint


class _QuietClientFactory(_HTTP11ClientFactory):
    noisy = False


class _QuietPool(HTTPConnectionPool):
    """A pool whose connection factories do not log "Starting/Stopping factory" (four
    lines per copy otherwise)."""

    _factory = _QuietClientFactory


# Makes the agent of one origin connection: called as (address, port, meter), plus the
# host name an HTTPS origin's certificate is verified for (only for HTTPS, so a factory
# that never serves HTTPS may take three arguments).
AgentFactory = Callable[..., IAgent]


def trust_root(ca_file: Path | None) -> IOpenSSLTrustRoot:
    """The CAs HTTPS origins are verified against: the PEM bundle, or the system's."""
    from twisted.internet.ssl import Certificate, platformTrust, trustRootFromCertificates

    if ca_file is None:
        system: IOpenSSLTrustRoot = platformTrust()
        return system
    data = ca_file.read_bytes()
    marker = b"-----BEGIN CERTIFICATE-----"
    blocks = [marker + part for part in data.split(marker)[1:]]
    bundle: IOpenSSLTrustRoot = trustRootFromCertificates(
        [Certificate.loadPEM(block) for block in blocks]
    )
    return bundle


class OriginClient(Service):
    """Owns the connection pool of all copies; stopping it closes the pool's connections.

    The pool is not persistent, on purpose: each copy is a whole object, so a reused
    connection saves little, and one connection per copy is what lets `WireMeter` account
    for it alone and see the origin close it after the body.
    """

    name = "origin-client"

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self.pool: HTTPConnectionPool = _QuietPool(reactor, persistent=False)
        self._ca_file: Path | None = None
        self._trust: IOpenSSLTrustRoot | None = None

    def trust(self, ca_file: Path | None) -> None:
        """`origin_fetch.ca_file` (start-up, reload): read again on the next HTTPS copy."""
        self._ca_file = ca_file
        self._trust = None

    def agent(
        self,
        address: str,
        port: int,
        meter: WireMeter,
        connect_timeout: float,
        tls_host: str | None = None,
    ) -> IAgent:
        """An agent for one copy, on its own connection to the vetted `address`; TLS
        verified for `tls_host` when given."""
        tls = None
        if tls_host is not None:
            from twisted.internet.ssl import optionsForClientTLS

            if self._trust is None:
                self._trust = trust_root(self._ca_file)
            tls = optionsForClientTLS(tls_host, trustRoot=self._trust)
        factory = PinnedEndpointFactory(self._reactor, address, port, connect_timeout, meter, tls)
        agent: IAgent = Agent.usingEndpointFactory(self._reactor, factory, pool=self.pool)
        return agent

    def stopService(self) -> Deferred[None]:
        super().stopService()
        closed: Deferred[None] = self.pool.closeCachedConnections()
        return closed
