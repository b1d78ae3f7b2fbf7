"""The web console (SPEC §10): static pages served from the package on the admin port.

Every call the console makes is a COS-signed request to the same admin port, so it can do
nothing the signing key could not do through the API.
"""

from __future__ import annotations

from pathlib import Path

from twisted.web.resource import IResource
from twisted.web.static import File

STATIC = Path(__file__).parent / "static"


def console_resource() -> IResource:
    """The `/console/` tree: the files under `static/`, index.html at its root."""
    return File(str(STATIC))
