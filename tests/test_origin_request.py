"""What a copy asks its origin (edge/origin/request.py): URLs built from a rule's plan, and
the hop a redirect's `Location` names, refused when it is not a plain http/https host."""

from __future__ import annotations

import pytest

from edge.config import OriginAddress
from edge.origin.request import OriginPlan, origin_port, redirect_target


def test_urls_ports_and_the_rewritten_path():
    """The plan's scheme and rewritten path make the URL, percent-encoded; the port is the
    configured one, else the scheme's (443 for HTTPS)."""
    origin = OriginAddress.parse("a.example.com")
    plan = OriginPlan(scheme="https", path="static/a b.jpg")
    assert plan.url(origin, "img/ignored.jpg") == b"https://a.example.com/static/a%20b.jpg"
    assert OriginPlan().url(origin, "k?x") == b"http://a.example.com/k%3Fx"
    assert origin_port(origin, "https") == 443 and origin_port(origin, "http") == 80
    assert origin_port(OriginAddress.parse("a.example.com:8443"), "https") == 8443


def test_redirect_targets():
    """A relative Location stays on the origin that answered; an absolute one names the
    next hop's host, port and scheme; the query is kept and the fragment dropped."""
    here = b"http://a.example.com:8080/old/x.png"
    relative = redirect_target(here, b"../new/x.png?v=2#top")
    assert relative.url == b"http://a.example.com:8080/new/x.png?v=2"
    assert relative.origin == OriginAddress.parse("a.example.com:8080")
    absolute = redirect_target(here, b"https://[2001:db8::1]:8443/y")
    assert absolute.scheme == "https" and absolute.origin.ip is not None
    assert absolute.url == b"https://[2001:db8::1]:8443/y"


@pytest.mark.parametrize(
    "location, words",
    [
        (b"ftp://a.example.com/x", "only http and https"),
        (b"http://user:pw@a.example.com/x", "user info"),
        (b"http://bad_host/x", "not a valid host name"),
        ("http://ä.example.com/x".encode(), "not ASCII"),
    ],
)
def test_redirect_targets_refused(location, words):
    """Another scheme, user info, a malformed host or a non-ASCII Location cannot be
    followed; the ValueError says why (the copy's reason then names it)."""
    with pytest.raises(ValueError, match=words):
        redirect_target(b"http://a.example.com/x", location)
