"""The HTTP channel's idle timeout, kept as one timer per connection instead of one per
request.

Twisted's `HTTPChannel` turns its idle timeout off while it answers a request
(`setTimeout(None)` in `allContentReceived`) and on again when the answer is done
(`setTimeout(saved)` in `requestDone`): every request on a keep-alive connection cancels
a `DelayedCall` and makes a new one. That is a Python object of a dozen attributes, a
push onto the reactor's timer heap (ordered by a Python `__lt__`), and a rebuild of the
heap whenever enough cancelled calls pile up in it: 2-3 % of the instructions of a 302 or
a 4 KiB hit (callgrind, 32 keep-alive connections).

Here the timer is made once per connection. While a request is answered it is pushed far
into the future instead of being cancelled, and turned on again by moving it back to
`timeOut` seconds from now. Moving a `DelayedCall` later only records the delay
(`DelayedCall.reset`); the heap is touched when the call's old time comes, at most once
per `timeOut`. What a client sees is Twisted's behaviour: no timeout while its request is
answered, and `timeOut` seconds of idleness allowed after it. When the connection is lost,
the timer is cancelled for good.

The timer is TimeoutMixin's own (`_TimeoutMixin__timeoutCall`, name-mangled).
tests/integration/test_idle_timeout.py checks the behaviour on a real reactor clock, so a
Twisted upgrade that moves the timer shows there.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

#: Where a suspended timer waits: far beyond any request's lifetime (a year).
SUSPENDED = 365 * 24 * 3600.0


class KeptIdleTimer:
    """Mixed into `twisted.web.http.HTTPChannel` ahead of it (see the module)."""

    timeOut: Any  # TimeoutMixin's seconds (None: off)
    _TimeoutMixin__timeoutCall: Any

    def setTimeout(self, period: float | None) -> float | None:
        call = self._TimeoutMixin__timeoutCall
        if period is None and self.timeOut is not None and call is not None and call.active():
            previous: float | None = self.timeOut
            self.timeOut = None  # as Twisted's: resetTimeout does nothing while suspended
            call.reset(SUSPENDED)
            return previous
        result: float | None = super().setTimeout(period)  # type: ignore[misc]
        return result

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        call = self._TimeoutMixin__timeoutCall
        if call is not None:
            if call.active():
                call.cancel()
            self._TimeoutMixin__timeoutCall = None
        super().connectionLost(reason)  # type: ignore[misc]
