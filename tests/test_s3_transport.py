"""edge.s3.transport: the store connections' plumbing that needs no store to check."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactor
from twisted.web.client import URI, BrowserLikePolicyForHTTPS, _StandardEndpointFactory
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface.verify import verifyObject

from edge.s3.transport import _StoreEndpoints


def test_one_endpoint_per_origin() -> None:
    """Requests to one store (any path) share one endpoint, made once; another port or
    scheme gets its own, and the cache is an `IAgentEndpointFactory` as `Agent` wants."""
    reactor = MemoryReactor()
    endpoints = _StoreEndpoints(
        _StandardEndpointFactory(reactor, BrowserLikePolicyForHTTPS(), None, None)
    )
    verifyObject(IAgentEndpointFactory, endpoints)
    first = endpoints.endpointForURI(URI.fromBytes(b"http://127.0.0.1:8333/b/k1"))
    again = endpoints.endpointForURI(URI.fromBytes(b"http://127.0.0.1:8333/b/k2?x=1"))
    other_port = endpoints.endpointForURI(URI.fromBytes(b"http://127.0.0.1:8334/b/k1"))
    tls = endpoints.endpointForURI(URI.fromBytes(b"https://127.0.0.1:8333/b/k1"))
    assert first is again
    assert len({id(first), id(other_port), id(tls)}) == 3
