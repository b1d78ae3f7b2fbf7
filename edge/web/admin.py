"""The admin port's resource tree (SPEC §9): `/metrics`, `/console/`, and the signed API.

The admin port answers the same COS API as the public port, through the public root's
own leaves (`EdgeResource.leaf_for`), so the console served here calls it same-origin.
Only signed requests (an Authorization header or a pre-signed URL) are let through:
every anonymous request other than `/metrics` and `/console/` is answered 403
AccessDenied, reads of objects included. The admin port is for operators and the console,
which signs every call; anonymous reads there would be a second public door, beside the
one the public port's metrics count, starting copies nobody sees in the request counts.

`/metrics` and `/console/` are matched on the path alone, whatever the Host: on the admin
port no bucket can be reached under those names (path-style `/metrics/...` is not a bucket
name anyway: bucket names end in `-<appid>`). The public port never serves either; there
they are ordinary bucket paths.
"""

from __future__ import annotations

from typing import Any

from twisted.web.resource import IResource, Resource, getChildForRequest
from twisted.web.server import Request
from twisted.web.util import Redirect

from edge.api import errors, signature
from edge.metrics.scrape import CONTENT_TYPE, exposition
from edge.web.console import console_resource
from edge.web.root import EdgeResource, InvalidTarget, LeafRoot

METRICS_PATH = b"/metrics"
CONSOLE_PATH = b"/console"


class MetricsResource(Resource):
    """`GET /metrics`: the Prometheus text exposition of the whole edge."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return exposition()

    def render_HEAD(self, request: Request) -> bytes:
        return self.render_GET(request)


class AdminResource(LeafRoot):
    """The admin port's root: metrics, the console, else the public tree's signed API."""

    def __init__(self, public: EdgeResource, console: IResource | None = None) -> None:
        super().__init__()
        self._public = public
        self._metrics = MetricsResource()
        self._console = console if console is not None else console_resource()
        self._to_console = Redirect(b"/console/")

    def leaf_for(self, request: Request) -> IResource:
        """The resource that answers `request` (see the module's docstring)."""
        path = request.uri.split(b"?", 1)[0]
        if path == METRICS_PATH:
            if request.method not in (b"GET", b"HEAD"):
                return InvalidTarget(errors.METHOD_NOT_ALLOWED)
            return self._metrics
        if path == CONSOLE_PATH:
            return self._to_console
        if path.startswith(CONSOLE_PATH + b"/"):
            return _traverse(self._console, request, path)
        query = request.uri.partition(b"?")[2] or None
        if not signature.is_signed(request.getHeader(b"authorization"), query):
            return InvalidTarget(errors.ACCESS_DENIED)
        leaf: IResource = self._public.leaf_for(request)
        return leaf


def _traverse(console: IResource, request: Any, path: bytes) -> IResource:
    """The console's file for `path`, found by Twisted's own traversal (`static.File`
    walks `postpath`), from `/console/` down."""
    from urllib.parse import unquote_to_bytes

    segments = path[len(CONSOLE_PATH) + 1 :].split(b"/")
    request.prepath = [CONSOLE_PATH[1:]]
    request.postpath = [unquote_to_bytes(s) for s in segments]
    found: IResource = getChildForRequest(console, request)
    return found
