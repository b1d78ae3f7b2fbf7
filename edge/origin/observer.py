"""What watches one origin fetch as it runs: the seam between a fetch and a Mirror miss.

A background copy has no observer; a Mirror miss's copy has one (`edge.origin.mirror`), which
takes the origin's response headers and a reader of the pending object's local file, hears
how much of the body is in that file as it grows, and learns how the copy ended. Kept apart
from fetch.py so the fetch only calls it.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.web.iweb import IResponse


class FetchObserver(Protocol):
    """Someone waiting on one fetch as it runs: a Mirror miss's clients (edge.origin.mirror).
    A copy with no observer is a plain background copy."""

    def response(self, response: IResponse, body: int) -> None:
        """The origin answered 200 within the limits; its body is about to stream into the
        pending write, whose local file `body` (a read-only descriptor, the observer's to
        close once the copy has ended and it has no more use for it) reads."""

    def arrived(self, data: bytes) -> None:
        """The next body chunk, as it arrives (before the worker thread writes it)."""

    def stored(self, size: int) -> None:
        """The first `size` body bytes are in that file (the worker thread wrote them): the
        chunks `arrived` gave, whole, in order."""

    def body_complete(self) -> None:
        """The body is whole (and matched the origin's digests, when it sent any); what
        remains (the store's hashes for a Mirror fetch, the publish) is no client's wait."""

    def ended(self, result: Any) -> None:
        """The copy is over: a `Fetched`, a `Failure`, or (never started) a `CopyStart`."""
