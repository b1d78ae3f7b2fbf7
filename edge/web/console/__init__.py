"""The web console (SPEC §10): static pages served from the package on the admin port.

Every call the console makes is a COS-signed request to the same admin port, so it can do
nothing the signing key could not do through the API. This resource only hands out the
page's own files: no directory listings, no files but those shipped under `static/`, and
headers that keep the page from loading anything from elsewhere (`Content-Security-Policy:
default-src 'self'`) or being framed by another site. The files are read once, when the
resource is made: they ship with the package and do not change while the edge runs.
"""

from __future__ import annotations

from pathlib import Path

from twisted.web import resource
from twisted.web.server import Request
from twisted.web.util import redirectTo

from edge.api import errors
from edge.web.replies import error

STATIC = Path(__file__).parent / "static"

CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".ico": b"image/x-icon",
}

# The page runs only its own scripts and styles and talks only to its own origin; it may
# not be framed (clickjacking an admin page), and browsers must not guess content types.
SECURITY_HEADERS = {
    b"content-security-policy": (
        b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
        b"base-uri 'none'; form-action 'none'"
    ),
    b"x-content-type-options": b"nosniff",
    b"x-frame-options": b"DENY",
    b"referrer-policy": b"no-referrer",
    # Revalidated on every load: a new edge version's files are never mixed with old ones.
    b"cache-control": b"no-cache",
}


def _read_files(folder: Path) -> dict[str, tuple[bytes, bytes]]:
    """Every servable file under `folder` by its relative path: (content type, bytes)."""
    files = {}
    for path in sorted(folder.rglob("*")):
        content_type = CONTENT_TYPES.get(path.suffix)
        if path.is_file() and content_type is not None:
            files[path.relative_to(folder).as_posix()] = (content_type, path.read_bytes())
    return files


class ConsoleResource(resource.Resource):
    """`/console/...`: one of the shipped files, or COS XML `404 NoSuchKey`."""

    isLeaf = True

    def __init__(self, folder: Path = STATIC) -> None:
        super().__init__()
        self._files = _read_files(folder)

    def render(self, request: Request) -> bytes:
        if request.method not in (b"GET", b"HEAD"):
            return error(request, errors.METHOD_NOT_ALLOWED)
        if not request.postpath:
            # `/console`: the page's relative links need the trailing slash.
            return redirectTo(request.uri.partition(b"?")[0] + b"/", request)
        name = "/".join(p.decode("utf-8", "replace") for p in request.postpath) or "index.html"
        found = self._files.get(name)
        if found is None:
            return error(request, errors.NO_SUCH_KEY)
        content_type, body = found
        for header, value in SECURITY_HEADERS.items():
            request.setHeader(header, value)
        request.setHeader(b"content-type", content_type)
        request.setHeader(b"content-length", b"%d" % len(body))
        return b"" if request.method == b"HEAD" else body


def console_resource() -> resource.IResource:
    """The `/console/` tree: the files under `static/`, index.html at its root."""
    return ConsoleResource()
