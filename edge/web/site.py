"""The HTTP site: request ids, XML even for bugs, and the access log as a structured event."""

from __future__ import annotations

import itertools
import secrets
import time
import weakref
from typing import Any
from urllib.parse import unquote_to_bytes as unquote

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from edge.api import errors
from edge.api.headers import canonical, set_own
from edge.store.folder.writes import UploadSpool
from edge.web.accesslog import AccessLogFile
from edge.web.bodies import BodyRefused, refusal_of
from edge.web.counting import count_finished
from edge.web.heads import OnePassHeads
from edge.web.http import http_date_now
from edge.web.idle import KeptIdleTimer
from edge.web.wire import DirectWrites

log = Logger()
access_log = Logger(namespace="cosedge.access")

_ids = itertools.count(1)
_id_prefix = secrets.token_hex(4)


def new_request_id() -> str:
    """Unique per process run, cheap, and sortable within a run: prefix + counter."""
    return f"{_id_prefix}{next(_ids):012x}"


class EdgeRequest(Request):
    """A request that carries its id from the start, so every response and log line has it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.request_id = new_request_id()
        self.started_at = time.monotonic()

    # No Content-Type unless a response sets one: a 302 or 304 has no body to describe.
    defaultContentType = None

    # Set when the body is refused at the end of the headers (see `EdgeChannel`).
    body_refusal: BodyRefused | None = None

    # The leaf of the resource tree that answers this request, once found (`EdgeSite`).
    handler: IResource | None = None

    def gotLength(self, length: int | None) -> None:
        """Called by the channel once all headers are in, before any body byte is read:
        the resource tree finds the request's handler now rather than after the body, and
        the handler chooses where the body goes (`body_sink_for`), after checking who sends
        it and for what. The HTTP layer has no folder of its own to write to. A request
        without a body gets Twisted's usual empty content file."""
        if length == 0:
            super().gotLength(length)
            return
        site = getattr(self.channel, "site", None)
        try:
            handler = site.getResourceFor(self) if isinstance(site, EdgeSite) else None
            sink_for = getattr(handler, "body_sink_for", None)
            if sink_for is None:
                raise BodyRefused(errors.INVALID_REQUEST)
            self.content = sink_for(self, length)
        except BodyRefused as refused:
            self.body_refusal = refused
            super().gotLength(0)
        except Exception:
            # A bug here would surface inside the channel's dataReceived, which drops the
            # connection with Twisted's "Unhandled Error": refuse the body in COS XML instead.
            log.failure(
                "Choosing the body sink of request {request_id} failed", request_id=self.request_id
            )
            self.body_refusal = BodyRefused(errors.INTERNAL_ERROR)
            super().gotLength(0)

    _abandoning = False
    _received = False

    def handleContentChunk(self, data: bytes) -> None:
        """A body refused while it arrives (the spool budget ran out, the disk is full) is
        answered now rather than after the client has sent the rest of it."""
        super().handleContentChunk(data)
        if not self._abandoning and refusal_of(self) is not None:
            self._abandoning = True
            abandon = getattr(self.channel, "abandon_body", None)
            if abandon is not None:
                abandon(self)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """Twisted's, less the parse of the query into `request.args` (a few microseconds
        on every request with a query): no edge resource reads `args`, the API parses the
        query its own way, once (`request_query`), and the site parses no forms."""
        self._received = True
        self.content.seek(0, 0)  # type: ignore[union-attr]
        self.args = {}
        self.method, self.uri = command, path
        self.clientproto = version
        self.path = path.split(b"?", 1)[0]
        self.process()

    def write(self, data: bytes) -> None:
        """Twisted's; a `write(b"")`, which asks for the headers to go out before a body
        that comes later, sends them now (the channel holds them back otherwise, to send
        them with the first body bytes: `edge.web.wire`)."""
        if self._inFakeHead or self._encoder is not None:
            super().write(data)
        else:
            # `server.Request.write` would look for a Content-Type to default (there is
            # none: `defaultContentType`) and an encoder (none): straight to http's.
            _http_write(self, data)
        if not data:
            flush = getattr(self.channel, "flush_head", None)
            if flush is not None:
                flush()

    def connectionLost(self, reason: Failure) -> None:
        """A client that goes away mid-upload leaves no temp file behind."""
        content = getattr(self, "content", None)
        if isinstance(content, UploadSpool):
            content.close()
        super().connectionLost(reason)

    def process(self) -> None:
        """Twisted's `server.Request.process`, less what no edge resource reads.

        Twisted splits and unquotes the path into `postpath` for its traversal, formats
        the Date anew and names itself in `Server` on every request: a sixth of a 302's
        cost (py-spy). The edge's root finds its leaf from the raw target
        (`EdgeSite.getResourceFor`, which builds `postpath` for roots that traverse), the
        Date is formatted once a second, and `Server` is set once, to cosedge. None of the
        edge's resources is an `_IEncodingResource`, so Twisted's encoder lookup is left
        out too."""
        headers = self.responseHeaders
        set_own(headers, _REQUEST_ID, self.request_id.encode("ascii"))
        set_own(headers, _SERVER, b"cosedge")
        set_own(headers, _DATE, http_date_now())
        if refusal_of(self) is not None and self.channel is not None:
            # The body was not (all) read: the connection cannot carry another request.
            self.channel.persistent = False
            self.setHeader(b"connection", b"close")
        self.site = self.channel.site  # type: ignore[attr-defined]
        self.prepath = []
        if self.path == b"*":
            self._handleStar()
            return
        try:
            self.render(self.site.getResourceFor(self))
        except BaseException:
            self.processingFailed(Failure())

    def processingFailed(self, reason: Failure) -> None:
        """A bug still answers COS XML (500 InternalError), never Twisted's HTML traceback."""
        log.failure("Request {request_id} failed", reason, request_id=self.request_id)
        if self.finished or self._disconnected:
            return
        if self.startedWriting:
            if self.channel is not None:
                self.channel.loseConnection()
            return
        # The same <Resource> as every other error: host and path, never the query (a
        # pre-signed URL's signature is in it).
        body = errors.write_error(
            self, errors.INTERNAL_ERROR, errors.resource_of(self), self.request_id
        )
        if body:
            self.write(body)
        self.finish()


# Taken once: `twisted.web.http` is a deprecation proxy whose every attribute read runs
# Python code (py-spy showed it on the hit path).
_http_write = http.Request.write
_REQUEST_ID = canonical(errors.REQUEST_ID_HEADER)
_SERVER = canonical(b"server")
_DATE = canonical(b"date")


class EdgeChannel(KeptIdleTimer, DirectWrites, OnePassHeads, http.HTTPChannel):
    """An HTTP/1.1 channel that can refuse a request's body without reading it.

    Twisted decides nothing about a body before reading it: `allHeadersReceived` calls
    `Request.gotLength`, answers `Expect: 100-continue` by itself, and the request is
    processed only once the whole body is in. Here the request line is handed to the
    request before `gotLength` (Twisted sets it only in `requestReceived`, after the body),
    so the resource can judge the request from its line and headers. When it refuses the
    body, no `100 Continue` is sent and the channel's expected length is set to 0: the
    channel then completes the request at once (`lineReceived` calls `allContentReceived`
    for a zero length), the resource answers the refusal in COS XML, and the connection
    closes after the answer, so the unread body is never parsed. What the client sends
    meanwhile is buffered by the channel up to its small pipelining limit (16 KiB), then
    the socket is paused until it closes.

    Twisted 26 has no public hook for this: `_respondToBadRequestAndDisconnect` writes a
    bare 400 on the transport, and a request cannot be answered through `Request.write`
    before `requestReceived`. So this override of `allHeadersReceived` repeats Twisted's
    own (persistence, `gotLength`, `100 Continue`; not the cookies, which no edge
    resource reads) and reads the channel's private `_command`/`_path`/`_version` and
    `_send100Continue`; the tests in
    tests/integration/test_bodies.py check the wire behaviour, so a Twisted upgrade that
    moves them shows there. In exchange the refusal is an ordinary request: it gets the
    request id, the access-log line and COS's XML from the usual code.

    Its writes go straight to the socket when nothing is queued (`DirectWrites`), a
    whole bodiless head is read in one pass (`OnePassHeads`), and its idle timer lasts
    as long as the connection (`KeptIdleTimer`).
    """

    _host: Any = None
    _peer: Any = None

    def getHost(self) -> Any:
        """The local address, asked of the socket once per connection instead of once per
        request (Twisted's `Request.__init__` asks for both ends: a `getsockname` and
        address objects per request)."""
        host = self._host
        if host is None:
            host = self._host = self.transport.getHost()
        return host

    def getPeer(self) -> Any:
        """The client's address, once per connection (see `getHost`)."""
        peer = self._peer
        if peer is None:
            peer = self._peer = self.transport.getPeer()
        return peer

    _secure: bool | None = None

    def isSecure(self) -> bool:
        """Whether the connection came over TLS, judged once per connection: Twisted adapts
        the transport to `ISSLTransport` each time it is asked, and every miss asks."""
        secure = self._secure
        if secure is None:
            secure = self._secure = bool(super().isSecure())
        return secure

    def allHeadersReceived(self) -> None:
        req = self.requests[-1]
        req.method, req.uri, req.clientproto = self._command, self._path, self._version
        self.persistent = self.checkPersistence(req, self._version)
        req.gotLength(self.length)
        if getattr(req, "body_refusal", None) is not None:
            self.persistent = False
            self.length = 0  # do not read the body: the request is complete as it stands
            return
        expect = req.requestHeaders.getRawHeaders(b"expect")
        if expect and expect[0].lower() == b"100-continue" and self._version == b"HTTP/1.1":
            self._send100Continue()

    def abandon_body(self, request: EdgeRequest) -> None:
        """Stop reading `request`'s body half-way and have the request answered now.

        Called from inside the body decoder's own callback, so the decoder is disarmed
        (its callbacks do nothing, further bytes go to a discarding decoder) and the request
        is completed on the next reactor turn, outside the decoder. If the body happens to
        end in the same data, the channel completes the request itself and the scheduled
        completion does nothing. The connection closes after the answer.
        """
        self.persistent = False
        decoder = self._transferDecoder
        if decoder is not None:
            decoder.dataCallback = decoder.finishCallback = _ignore
        self._transferDecoder = _DiscardingDecoder()
        self.callLater(0, lambda: self._complete_abandoned(request))

    def _complete_abandoned(self, request: EdgeRequest) -> None:
        if request._received or request._disconnected or not self.requests:
            return
        if self.requests[-1] is request:
            self.allContentReceived()


def _ignore(data: bytes) -> None:
    pass


class _DiscardingDecoder:
    """Takes the rest of an abandoned body until the request is completed."""

    def dataReceived(self, data: bytes) -> None:
        pass

    def noMoreData(self) -> None:
        pass


class EdgeSite(Site):
    """A Site whose access log is one `twisted.logger` event per request.

    The event carries the combined-log-format fields by name, so JSON log output
    (`twistd --logger`) gives machine-readable access logs without parsing text.
    """

    requestFactory = EdgeRequest
    protocol = EdgeChannel  # type: ignore[assignment]
    displayTracebacks = False

    # Where access lines go: None is today's `twisted.logger` event (the twistd log), an
    # `AccessLogFile` its own buffered file, OFF nowhere (`access_log: null`).
    access: AccessLogFile | object | None = None

    # Whether finished requests count in the metrics (`edge.web.counting`): the public
    # port's site; the admin port's does not, its traffic is the operator's own.
    counted = True

    def __init__(self, resource: IResource, **kwargs: Any) -> None:
        # No form parsing: Twisted would read a signed POST's whole spooled body into memory.
        kwargs.setdefault("parsePOSTFormSubmission", False)
        super().__init__(resource, **kwargs)
        self.requestFactory = EdgeRequest
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()

    def getResourceFor(self, request: http.Request) -> IResource:
        """The request's handler, found once per request: at the end of the headers for a
        request with a body (`EdgeRequest.gotLength`), else when it is processed.

        The edge's root picks the leaf from the raw target (`leaf_for`), and leaves read
        the raw target rather than `prepath`/`postpath`, so the handler is asked of the
        root directly instead of through Twisted's segment-by-segment traversal (which
        cost a 4 KiB hit a tenth of its time); any other root is traversed as usual."""
        request.site = self  # type: ignore[attr-defined]
        handler: IResource | None = getattr(request, "handler", None)
        if handler is not None:
            return handler
        leaf_for = getattr(self.resource, "leaf_for", None)
        if leaf_for is not None:
            request.sitepath = []  # type: ignore[attr-defined]
            handler = leaf_for(request)
        else:
            if getattr(request, "postpath", None) is None:  # at the end of the headers
                path = request.uri.split(b"?", 1)[0]
                request.prepath = []  # type: ignore[attr-defined]
                request.postpath = list(map(unquote, path[1:].split(b"/")))  # type: ignore[attr-defined]
            handler = super().getResourceFor(request)
        request.handler = handler  # type: ignore[attr-defined]
        assert handler is not None
        return handler

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        if protocol is not None:
            self._connections.add(protocol)
        return protocol

    def close_connections(self) -> None:
        """Close the connections still open when the listener stops (keep-alive ones
        would otherwise idle on until their timeout, with the edge no longer serving)."""
        for protocol in list(self._connections):
            # Twisted's generic HTTP protocol (HTTP/1.1 or h2) forwards to its `_channel`.
            channel = getattr(protocol, "_channel", protocol)
            transport = getattr(channel, "transport", None)
            if transport is not None and not getattr(transport, "disconnected", False):
                transport.loseConnection()

    def log(self, request: http.Request) -> None:
        req: EdgeRequest = request  # type: ignore[assignment]
        if self.counted:
            count_finished(req)
        access = self.access
        if access is not None:
            if access is not OFF:
                _to_file(access, req)  # type: ignore[arg-type]
            return
        fields = {
            "remote": _remote(req),
            "method": req.method.decode("latin-1"),
            "uri": errors.redact_uri(req.uri).decode("latin-1"),
            "protocol": req.clientproto.decode("latin-1"),
            "code": req.code,
            "length": req.sentLength or 0,
            "referer": (req.getHeader(b"referer") or b"-").decode("latin-1"),
            "user_agent": (req.getHeader(b"user-agent") or b"-").decode("latin-1"),
            "request_id": getattr(req, "request_id", "-"),
            "duration_ms": round((time.monotonic() - req.started_at) * 1000, 1),
        }
        # The line is formatted here, once, and handed over with its braces escaped: text
        # observers then have nothing left to format (measured: formatting the fields in
        # the observer was a quarter of a hit's cost), and JSON observers still get every
        # field by name.
        line = _ACCESS_LINE.format(**fields).replace("{", "{{").replace("}", "}}")
        access_log.info(line, **fields)


_ACCESS_LINE = (
    '{remote} - - "{method} {uri} {protocol}" {code} {length} "{referer}" "{user_agent}"'
    " {request_id} {duration_ms}ms"
)


OFF = object()  # `EdgeSite.access` for `access_log: null`


def _to_file(access: AccessLogFile, req: EdgeRequest) -> None:
    """The same fields as the event, as bytes, straight into the buffered file."""
    headers = req.requestHeaders._rawHeaders  # two lookups, not two getRawHeaders calls
    referer = headers.get(_REFERER)
    agent = headers.get(_USER_AGENT)
    uri = req.uri
    channel = req.channel
    remote = getattr(channel, "_access_remote", None)
    if remote is None:  # once per connection
        remote = _remote(req).encode("latin-1")
        if channel is not None:
            channel._access_remote = remote  # type: ignore[attr-defined]
    access.add(
        remote,
        req.method,
        _redacted(uri),
        req.clientproto,
        req.code,
        req.sentLength or 0,
        referer[-1] if referer else b"-",
        agent[-1] if agent else b"-",
        req.request_id.encode("ascii"),
        (time.monotonic() - req.started_at) * 1000,
    )


_REFERER = canonical(b"referer")
_USER_AGENT = canonical(b"user-agent")
_Q, _X, _PERCENT = b"qx%"  # byte values


def _redacted(uri: bytes) -> bytes:
    """`errors.redact_uri`, skipped when no parameter name can be a secret: every secret
    name starts with q (or is x-cos-security-token), so its raw form holds a `q`/`Q`, an
    `x`/`X` or a %-escape."""
    query = uri.partition(b"?")[2]
    if not query:
        return uri
    lowered = query.lower()
    # Byte values, not one-byte strings: `b"q" in data` costs ten times `113 in data`.
    if _Q not in lowered and _X not in lowered and _PERCENT not in query:
        return uri
    return errors.redact_uri(uri)


def _remote(request: Request) -> str:
    host = getattr(request.getClientAddress(), "host", None)
    return host if isinstance(host, str) else "-"
