"""Reading a Deferred that has already fired, for synchronous tests of code that answers
through Deferreds (the folder store fires its answers at once)."""

from __future__ import annotations

from typing import TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

T = TypeVar("T")


def fired(d: Deferred[T]) -> T:
    """The result of `d`, which must have fired; a failure is raised as its exception."""
    results: list[T | Failure] = []
    d.addBoth(results.append)
    if not results:
        raise AssertionError(f"{d!r} has not fired")
    result = results[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result
