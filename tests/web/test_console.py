"""The console's static-file resource (SPEC §10): its own files only, with headers that
keep the page from loading anything from elsewhere, and COS XML for everything else."""

from __future__ import annotations

import re
from typing import Any

import pytest_twisted
from treq.testing import StubTreq
from twisted.web.resource import Resource

from edge.web.console import STATIC, console_resource
from edge.web.site import EdgeSite


def _stub() -> Any:
    root = Resource()
    root.putChild(b"console", console_resource())
    http = StubTreq(root)
    # As tests/web/conftest.py: the edge's requests (with their ids) come from EdgeSite.
    agent = http._agent
    agent._serverFactory = EdgeSite(root, reactor=agent._memoryReactor)
    return http


@pytest_twisted.ensureDeferred
async def test_index_and_assets_come_with_their_types_and_a_strict_policy() -> None:
    """`/console/` is index.html; each script and the stylesheet comes with its content
    type, `no-cache`, `nosniff` and a CSP that allows only the page's own origin."""
    http = _stub()
    for path, content_type in [
        ("/console/", b"text/html; charset=utf-8"),
        ("/console/app.js", b"text/javascript; charset=utf-8"),
        ("/console/cos-sign.js", b"text/javascript; charset=utf-8"),
        ("/console/console.css", b"text/css; charset=utf-8"),
    ]:
        response = await http.get("http://127.0.0.1" + path)
        body = await response.content()
        assert response.code == 200, path
        assert response.headers.getRawHeaders(b"content-type") == [content_type], path
        csp = response.headers.getRawHeaders(b"content-security-policy")[0]
        assert csp.startswith(b"default-src 'self'"), path
        assert response.headers.getRawHeaders(b"x-content-type-options") == [b"nosniff"]
        assert response.headers.getRawHeaders(b"cache-control") == [b"no-cache"]
        name = path.rsplit("/", 1)[1] or "index.html"
        assert body == (STATIC / name).read_bytes()


def test_the_page_loads_nothing_from_elsewhere() -> None:
    """No file of the console names another origin (no CDN, no web fonts: the absolute URLs
    are the SVG namespace and the words telling a user where WebCrypto works), and the page
    has no inline script or style for the CSP to refuse."""
    html = (STATIC / "index.html").read_text()
    assert "<script>" not in html and "<style" not in html and "style=" not in html
    for path in STATIC.iterdir():
        text = path.read_text().replace('xmlns="http://www.w3.org/2000/svg"', "")
        text = re.sub(r"http://(localhost|127\.0\.0\.1)\b(?![:/])", "", text)
        assert re.search(r"https?://", text) is None, path.name
        assert re.search(r"(src|href|url)\s*[=(]\s*[\"']?//", text) is None, path.name


@pytest_twisted.ensureDeferred
async def test_unknown_paths_listings_and_writes_are_refused_in_cos_xml() -> None:
    """A missing file, a folder, a path out of the folder and a POST get COS XML errors,
    never a directory listing or Twisted's HTML page; `/console` gains its slash."""
    http = _stub()
    for path in ("/console/nope.js", "/console/static/", "/console/../__init__.py"):
        response = await http.get("http://127.0.0.1" + path)
        body = await response.content()
        assert response.code == 404, path
        assert b"<Code>NoSuchKey</Code>" in body, path
    response = await http.post("http://127.0.0.1/console/app.js", data=b"x")
    assert response.code == 405
    assert b"<Code>MethodNotAllowed</Code>" in await response.content()
    response = await http.get("http://127.0.0.1/console", allow_redirects=False)
    assert response.code == 302
    assert response.headers.getRawHeaders(b"location") == [b"/console/"]
