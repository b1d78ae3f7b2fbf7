"""Request heads read in one pass (`edge.web.heads`) mean what Twisted's line parser makes
of them: whatever the fast path takes, Twisted takes with the same method, target,
version and headers; what it leaves (malformed, bodies, folding, pipelining) is answered
by Twisted's parser, 400s included; the channel serves requests on either path."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport
from twisted.web import http
from twisted.web.resource import Resource

from edge.web.heads import parse_head
from edge.web.site import EdgeSite


class _Recorder(http.Request):
    seen: list[tuple[Any, ...]]

    def process(self) -> None:
        self.seen.append(
            (self.method, self.uri, self.clientproto, dict(self.requestHeaders._rawHeaders))
        )
        self.setHeader(b"content-length", b"0")
        self.finish()


def _twisted(data: bytes) -> tuple[list[tuple[Any, ...]], bytes]:
    """What Twisted's own channel makes of `data`: the requests it saw, its answer."""
    seen: list[tuple[Any, ...]] = []

    class Recorder(_Recorder):
        pass

    Recorder.seen = seen
    channel = http.HTTPChannel()
    channel.requestFactory = Recorder
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(data)
    channel.connectionLost(None)
    return seen, transport.value()


def _same_as_twisted(data: bytes) -> None:
    fast = parse_head(data, http.HTTPChannel.totalHeadersSize, http.HTTPChannel.maxHeaders)
    seen, answer = _twisted(data)
    if fast is not None:
        assert seen == [fast], data
        assert answer.startswith(b"HTTP/1.1 200") or answer.startswith(b"HTTP/1.0 200")


GOOD = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"HEAD /b/k%20e?v=1&x HTTP/1.0\r\n\r\n",
    b"GET /k HTTP/1.1\r\nhost: a\r\nX-Two: 1\r\nx-two:  2 \t\r\nAccept:\r\n\r\n",
    b"DELETE /k?uploadId=1 HTTP/1.1\r\nAuthorization: q-sign-algorithm=sha1&q-ak=x\r\n\r\n",
    b"GET /\xb0 HTTP/1.1\r\nUser-Agent: caf\xc3\xa9\r\nReferer: http://x/?a=b:c\r\n\r\n",
    b"GET /a\x7fb HTTP/1.1\r\n\r\n",  # DEL: Twisted allows 33..176 in a target
]

LEFT_TO_TWISTED = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n\r\n",  # pipelined
    b"GET / HTTP/1.1\r\nHost: a\r\n",  # not whole yet
    b"PUT /k HTTP/1.1\r\nContent-Length: 3\r\n\r\n",  # a body
    b"GET /k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET /k HTTP/1.1\r\nX: a\r\n b\r\n\r\n",  # folded
    b"\r\nGET / HTTP/1.1\r\n\r\n",  # IE's extra blank line
    b"GET / HTTP/2.0\r\n\r\n",
    b"GET  / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1 \r\n\r\n",
    b"G@T / HTTP/1.1\r\n\r\n",
    b"GET /\xb1 HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
    b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
    b"GET / HTTP/1.1\r\n: empty name\r\n\r\n",
    b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
    b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
    b"GET / HTTP/1.1\nX: a\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 501 + b"\r\n",
    b"GET /" + b"a" * 17000 + b" HTTP/1.1\r\n\r\n",
]


def test_whole_heads_parse_as_twisted_parses_them():
    """Every head the fast path takes gives Twisted's method, target, version and headers
    (names canonicalised, values stripped, repeats in order)."""
    for data in GOOD:
        assert parse_head(data, 16384, 500) is not None, data
        _same_as_twisted(data)


def test_what_the_fast_path_leaves_goes_to_twisted():
    """Pipelined, partial, bodied, folded and malformed heads are not taken: Twisted's
    parser answers them (a 400 where it refuses)."""
    for data in LEFT_TO_TWISTED:
        assert parse_head(data, 16384, 500) is None, data


_token = st.text(alphabet="abcXYZ-_!~019", min_size=0, max_size=6).map(str.encode)
_value = st.binary(max_size=8).filter(lambda b: b"\r\n" not in b)
_line = st.one_of(
    st.tuples(_token, st.sampled_from([b":", b": ", b" :", b""]), _value).map(b"".join),
    st.binary(max_size=10).filter(lambda b: b"\r\n" not in b),
)
_head = st.tuples(
    st.sampled_from([b"GET", b"HEAD", b"DELETE", b"PUT", b"get", b"GET "]),
    st.sampled_from([b" ", b"  "]),
    st.binary(min_size=0, max_size=8).filter(lambda b: b"\r\n" not in b),
    st.sampled_from([b" HTTP/1.1", b" HTTP/1.0", b" HTTP/1.2", b"HTTP/1.1"]),
    st.lists(_line, max_size=5),
    st.sampled_from([b"\r\n\r\n", b"\r\n", b"\r\n\r\nX", b"\n\n"]),
).map(lambda t: t[0] + t[1] + b"/" + t[2] + t[3] + b"".join(b"\r\n" + x for x in t[4]) + t[5])


@settings(max_examples=1000, deadline=None)
@given(_head)
def test_any_head_the_fast_path_takes_means_the_same_to_twisted(data):
    """Random heads, well- and ill-formed: where the fast path takes one, Twisted's own
    parser takes it too, with the same request line and headers."""
    _same_as_twisted(data)


class _Echo(Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        names = sorted(request.requestHeaders._rawHeaders)
        return b"%s %s %s" % (request.method, request.uri, b",".join(names))


def test_channel_serves_fast_and_slow_heads_alike():
    """One connection, a head taken in one pass, a pipelined pair and a head that comes
    in pieces (Twisted's parser), then one pass again: four answers, in order."""
    site = EdgeSite(_Echo())
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n")
    channel.dataReceived(b"GET /two HTTP/1.1\r\nX-A: 1\r\n\r\nGET /three HTTP/1.1\r\n\r\n")
    channel.dataReceived(b"GET /fo")
    channel.dataReceived(b"ur HTTP/1.1\r\nHost: a\r\n\r\n")
    channel.dataReceived(b"GET /five HTTP/1.1\r\nHost: a\r\n\r\n")
    wire = transport.value()
    bodies = [part.split(b"\r\n\r\n", 1)[1] for part in wire.split(b"HTTP/1.1 200 OK")[1:]]
    assert [b.split(b" ")[1] for b in bodies] == [
        b"/one",
        b"/two",
        b"/three",
        b"/four",
        b"/five",
    ]
    assert bodies[1].endswith(b"X-A") and bodies[0].endswith(b"Host")
    channel.connectionLost(None)
