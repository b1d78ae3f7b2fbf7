"""What watches one origin fetch as it runs: the seam between a fetch and a Mirror miss.

A background copy has no observer; a Mirror miss's copy has one (`edge.origin.mirror`), which
takes the origin's response headers, sees every body byte on its way to the pending object,
and learns how the copy ended. Kept apart from fetch.py so the fetch only calls it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.web.iweb import IResponse


class FetchObserver(Protocol):
    """Someone waiting on one fetch as it runs: a Mirror miss's clients (edge.origin.mirror).
    A copy with no observer is a plain background copy."""

    def response(self, response: IResponse) -> None:
        """The origin answered 200 within the limits; its body is about to stream."""

    def tee(self, sink: Callable[[bytes], None]) -> Callable[[bytes], None]:
        """What the body goes to instead of `sink`, the pending write (which it must feed)."""

    def body_complete(self) -> None:
        """The body is whole and checked; only the publish remains."""

    def ended(self, result: Any) -> None:
        """The copy is over: a `Fetched`, a `Failure`, or (never started) a `CopyStart`."""
