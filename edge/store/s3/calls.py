"""How the S3 store talks to its S3 client: every call through one gate that turns the client's
errors into the seam's and logs an outage once, not once per request.

The seam promises callers neutral exceptions (SPEC §8: a store outage is answered 503 by the
layer above), so no `S3Error` or Twisted failure leaves the S3 store: `S3Unavailable`, and
any refusal the store has no better name for (a wrong key pair, a store bucket someone
removed), becomes `StoreUnavailable`; multipart refusals become `MultipartError` with COS's
code. Refusals a caller expects (412 on a create-only write, 416, NoSuchUpload) are caught by
that caller before they reach the gate.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from edge.s3 import S3Error, S3Unavailable
from edge.store.interface import MultipartError, StoreUnavailable

log = Logger()

T = TypeVar("T")

#: S3 codes of multipart refusals that COS spells the same way.
MULTIPART_CODES = frozenset(
    {"NoSuchUpload", "InvalidPart", "InvalidPartOrder", "EntityTooSmall", "MalformedXML"}
)


class StoreGate:
    """The one way the S3 store awaits its client; see the module docstring."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.down = False

    async def run(self, what: str, call: Coroutine[Any, Any, T]) -> T:
        """Await `call` (described by `what`, for the log), translating its failures."""
        try:
            result = await call
        except S3Unavailable as e:
            self.failed(what, str(e))
            raise StoreUnavailable(f"{what}: {e}") from None
        except S3Error as e:
            raise self.neutral(what, e) from None
        self.answered()
        return result

    def defer(self, what: str, call: Coroutine[Any, Any, T]) -> Deferred[T]:
        """`run` as a Deferred, for the seam's methods."""
        return Deferred.fromCoroutine(self.run(what, call))

    def neutral(self, what: str, error: S3Error) -> Exception:
        """The seam's exception for a refusal the caller did not expect."""
        if error.code in MULTIPART_CODES:
            return MultipartError(error.code, error.message or str(error))
        # The store answered, but not with something the edge can serve from: to a client
        # this is the store not being usable (503), and the operator needs to hear of it.
        log.warn(
            "S3 store at {endpoint} refused {what}: {error}",
            endpoint=self.endpoint,
            what=what,
            error=str(error),
        )
        return StoreUnavailable(f"{what}: {error}")

    def failed(self, what: str, reason: str) -> None:
        """The store could not be reached: warn if this starts an outage."""
        if not self.down:
            self.down = True
            log.warn(
                "S3 store at {endpoint} is unreachable ({reason}): requests that need it "
                "are answered 503 until it is back",
                endpoint=self.endpoint,
                reason=f"{what}: {reason}",
            )

    def answered(self) -> None:
        if self.down:
            self.down = False
            log.info("S3 store at {endpoint} is reachable again", endpoint=self.endpoint)
