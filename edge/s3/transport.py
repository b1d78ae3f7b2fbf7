"""The request plumbing every S3 call goes through: build the URL, hash, sign, send, map errors.

`S3Transport` owns (or is given) a persistent `HTTPConnectionPool`, so requests reuse
connections instead of paying a TCP handshake each, and it is the one place that turns
Twisted's many network failures into `S3Unavailable` and an error answer into `S3Error`; the
per-concept call groups (`edge.s3.objects`, `edge.s3.multipart`, `edge.s3.buckets`) build on
it and never see a raw response failure. Paths are always path-style (`endpoint/bucket/key`):
stores on loopback or behind one host name have no per-bucket DNS.

Payload hashes (`x-amz-content-sha256`): bodies from `FileRangeProducer` and `bytes` are hashed
(files in a thread) and signed, because strict stores (Ceph RGW, AWS over http) reject
`UNSIGNED-PAYLOAD` or treat it as a weaker request; only a caller's own producer of unknown
content is sent as `UNSIGNED-PAYLOAD`, unless the caller passes `payload_sha256`. (SeaweedFS
4.48 accepts either and does not check the hash; the choice is for the stricter stores.)

A local file that cannot be read while its body is being sent surfaces as `S3Unavailable` too:
Twisted reports it as the request failing to go out, indistinguishable from a lost connection.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit
from xml.etree.ElementTree import Element

from twisted.internet import error as neterror
from twisted.internet.abstract import FileDescriptor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.web._newclient import BODY, HTTP11ClientProtocol, RequestNotSent
from twisted.web.client import (
    URI,
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    RequestGenerationFailed,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
    _HTTP11ClientFactory,
    _StandardEndpointFactory,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgentEndpointFactory, IBodyProducer, IResponse
from zope.interface import implementer

from edge.s3.bodies import BytesProducer, Collector, FileRangeProducer, TouchingProducer, Watchdog
from edge.s3.errors import S3Error, S3Unavailable, error_from_response, local_name, parse_xml
from edge.s3.results import request_id_of
from edge.s3.signing import EMPTY_SHA256, UNSIGNED_PAYLOAD, Signer, encode_key, encode_query

log = Logger()

#: Failures that mean "the store is not reachable / stopped answering", never a caller bug.
_NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    neterror.ConnectError,
    neterror.ConnectionLost,
    neterror.ConnectionDone,
    neterror.TimeoutError,
    neterror.DNSLookupError,
    ResponseFailed,
    ResponseNeverReceived,
    RequestNotSent,
    RequestTransmissionFailed,
    RequestGenerationFailed,
    CancelledError,
    OSError,
)

#: Bodies above this are hashed in a thread even when they are already in memory.
_INLINE_HASH_LIMIT = 1024 * 1024


class S3Transport:
    """One S3 endpoint and one set of credentials: signs, sends and reads; see the module."""

    def __init__(
        self,
        endpoint: str,
        region: str,
        access_key_id: str,
        secret_access_key: str,
        pool: HTTPConnectionPool | None = None,
        reactor: Any = None,
        timeout: float = 30,
        signer: Signer | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"endpoint must be http(s)://host[:port], not {endpoint!r}")
        self.endpoint = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self.region = region
        self._reactor = reactor
        self._timeout = timeout
        self._owns_pool = pool is None
        if pool is None:
            pool = _ClosablePool(reactor, persistent=True)
            pool.maxPersistentPerHost = 32
            # Below the idle timeouts of common stores (SeaweedFS 30 s), so a cached connection
            # is dropped by us before the store closes it under a request.
            pool.cachedConnectionTimeout = 20
        self._pool = pool
        endpoints = _StoreEndpoints(
            _StandardEndpointFactory(reactor, BrowserLikePolicyForHTTPS(), None, None)
        )
        self._agent = Agent.usingEndpointFactory(reactor, endpoints, pool=pool)
        #: Signs every request; the credentials' own unless one was given (say, on a fixed clock).
        self._signer = signer or Signer(access_key_id, secret_access_key, region)

    async def close(self) -> None:
        """Close the pool's idle connections if the pool is ours (not one passed in)."""
        if self._owns_pool:
            if isinstance(self._pool, _ClosablePool):
                self._pool.closed = True
            await self._pool.closeCachedConnections()

    # -- the exchange every call goes through -------------------------------------------------

    def _url(self, bucket: str, key: str | None, query: Mapping[str, str | None] | None) -> str:
        path = "/" + quote(bucket, safe="")
        if key is not None:
            path += "/" + encode_key(key)
        url = self.endpoint + path
        if query:
            url += "?" + encode_query(query)
        return url

    async def _payload(
        self, body: bytes | IBodyProducer | None, sha: str | None
    ) -> tuple[IBodyProducer | None, str]:
        if body is None:
            return None, EMPTY_SHA256
        if isinstance(body, bytes):
            if sha is None:
                if len(body) > _INLINE_HASH_LIMIT:
                    sha = await deferToThread(lambda: hashlib.sha256(body).hexdigest())
                else:
                    sha = hashlib.sha256(body).hexdigest()
            return BytesProducer(body), sha
        if body.length == UNKNOWN_LENGTH:
            raise ValueError("S3 needs the body's length up front (no chunked uploads)")
        if sha is None and isinstance(body, FileRangeProducer):
            try:
                sha = await body.sha256()
            except OSError as e:
                raise ValueError(f"cannot read the body file: {e}") from e
        return body, sha or UNSIGNED_PAYLOAD

    async def _send(
        self,
        method: str,
        bucket: str,
        key: str | None = None,
        query: Mapping[str, str | None] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | IBodyProducer | None = None,
        payload_sha256: str | None = None,
    ) -> IResponse:
        """Sign and send one request; return the response once its headers are in.

        The idle watchdog covers connecting, sending the body (touched by every chunk) and
        waiting for the answer, so a dead store fails in `timeout` seconds, not a TCP timeout.
        """
        url = self._url(bucket, key, query)
        producer, sha = await self._payload(body, payload_sha256)
        signed = self._signer.sign(method, url, headers or {}, sha)
        request_headers = Headers({name: [value] for name, value in signed.items()})
        pending: list[Deferred[IResponse]] = []
        watchdog = Watchdog(self._reactor, self._timeout, lambda: pending[0].cancel())
        if producer is not None:
            producer = TouchingProducer(producer, watchdog)
        d: Deferred[IResponse] = self._agent.request(
            method.encode(), url.encode("ascii"), request_headers, producer
        )
        pending.append(d)
        try:
            return await d
        except _NETWORK_ERRORS as e:
            if watchdog.expired:
                why = f"no answer from the store within {self._timeout:g} s"
            elif _cancelled(e):
                # The caller cancelled: theirs to handle, not an outage. (Once the request is
                # out, Twisted wraps the cancellation in ResponseNeverReceived.)
                raise CancelledError() from None
            else:
                why = _describe(e)
            # Debug only: the store built on this client logs one warning per outage (SPEC §8).
            log.debug("S3 {method} {url} failed: {why}", method=method, url=url, why=why)
            raise S3Unavailable(f"{why} ({method} {url})") from None
        finally:
            watchdog.stop()

    async def _read(self, response: IResponse) -> bytes:
        collector = Collector(self._reactor, self._timeout)
        response.deliverBody(collector)
        return await collector.finished

    async def _fail(self, response: IResponse) -> S3Error:
        try:
            body = await self._read(response)
        except S3Unavailable:
            body = b""
        return error_from_response(response.code, body, request_id_of(response))

    async def _call(
        self,
        method: str,
        bucket: str,
        key: str | None = None,
        query: Mapping[str, str | None] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | IBodyProducer | None = None,
        payload_sha256: str | None = None,
    ) -> tuple[IResponse, bytes]:
        """`_send` for calls with small answers: the body is read, errors are raised."""
        response = await self._send(method, bucket, key, query, headers, body, payload_sha256)
        if response.code >= 300:
            raise await self._fail(response)
        data = await self._read(response)
        # CompleteMultipartUpload (and copies) may answer 200 with an <Error> body.
        if data.lstrip().startswith(b"<") and method == "POST":
            root = parse_xml(data)
            if root is not None and local_name(root) == "Error":
                raise error_from_response(500, data, request_id_of(response))
        return response, data

    async def _xml(self, data: bytes) -> Element:
        root = parse_xml(data)
        if root is None:
            raise S3Unavailable("store answered with a body that is not XML", 200, "BadXML")
        return root


#: Bytes one read of a store connection takes from its socket while a response's body is
#: coming (Twisted's default is 64 KiB). Every read is a turn of the reactor through the HTTP
#: parser and into the client's request, so bigger reads move an object's bytes in fewer
#: Python turns: 256 KiB took about a seventh off the edge's CPU per 1 MiB hit. 1 MiB reads
#: cost more than they saved (each allocates its full size, which glibc maps and unmaps: ~250
#: page faults a hit). It is also the point at which an upload's body producer is paused.
STORE_READ_SIZE = 256 * 1024
#: ... and while a response's status line and headers are coming: Twisted's line parser
#: copies the rest of the read for every header line it splits off, which for a 256 KiB first
#: read was 7 % of a 1 MiB hit.
HEADER_READ_SIZE = 16 * 1024


class _StoreConnection(HTTP11ClientProtocol):
    """Twisted's HTTP/1.1 client protocol reading `HEADER_READ_SIZE` bytes per socket read
    until a response's headers are in, then `STORE_READ_SIZE` for its body (from the TCP
    connection itself, also under TLS when the store is https)."""

    _socket: FileDescriptor | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        transport = self.transport
        for _ in range(3):
            if isinstance(transport, FileDescriptor):
                self._socket = transport
                return
            transport = getattr(transport, "transport", None)

    def request(self, request: Any) -> Deferred[IResponse]:
        if self._socket is not None:
            self._socket.bufferSize = HEADER_READ_SIZE
        answer: Deferred[IResponse] = super().request(request)
        return answer

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        parser = self._parser
        if parser is not None and parser.state == BODY and self._socket is not None:
            self._socket.bufferSize = STORE_READ_SIZE


@implementer(IAgentEndpointFactory)
class _StoreEndpoints:
    """Twisted's endpoint for each origin (scheme, host, port), made once: `Agent` asks for
    one per request, even when the pool then hands out a connection it already has."""

    def __init__(self, factory: IAgentEndpointFactory) -> None:
        self._factory = factory
        self._endpoints: dict[tuple[bytes, bytes, int], IStreamClientEndpoint] = {}

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        origin = (uri.scheme, uri.host, uri.port)
        endpoint = self._endpoints.get(origin)
        if endpoint is None:
            endpoint = self._endpoints[origin] = self._factory.endpointForURI(uri)
        return endpoint


class _QuietFactory(_HTTP11ClientFactory):
    """Twisted's per-connection factory without its "Starting factory" log lines: a
    store client opens connections all day, and each line would say nothing."""

    noisy = False

    def buildProtocol(self, addr: Any) -> HTTP11ClientProtocol:
        return _StoreConnection(self._quiescentCallback)


class _ClosablePool(HTTPConnectionPool):
    """A pool that, once closed, closes connections its requests still in flight hand
    back instead of caching them (each cached one would leave an idle-timeout timer)."""

    closed = False
    _factory = _QuietFactory

    def _putConnection(self, key: Any, connection: Any) -> None:
        if self.closed:
            connection.transport.loseConnection()
            return
        super()._putConnection(key, connection)


def _cancelled(e: BaseException) -> bool:
    if isinstance(e, CancelledError):
        return True
    return any(r.check(CancelledError) for r in getattr(e, "reasons", None) or ())


def _describe(e: BaseException) -> str:
    reasons = getattr(e, "reasons", None)
    if reasons:
        return "; ".join(r.getErrorMessage() for r in reasons) or type(e).__name__
    return str(e) or type(e).__name__
