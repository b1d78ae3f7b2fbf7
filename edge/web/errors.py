"""COS-style XML error responses, rendered in one place.

Every error the edge answers, including the ones from a bug, goes through `write_error`, so
clients always get COS's XML shape and the request id, never Twisted's HTML pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape

from twisted.web.server import Request


@dataclass(frozen=True)
class CosError:
    code: str
    status: int
    message: str


NO_SUCH_KEY = CosError("NoSuchKey", 404, "The specified key does not exist.")
NO_SUCH_BUCKET = CosError("NoSuchBucket", 404, "The specified bucket does not exist.")
INVALID_URI = CosError("InvalidURI", 400, "Couldn't parse the specified URI.")
ACCESS_DENIED = CosError("AccessDenied", 403, "Access Denied.")
INVALID_RANGE = CosError("InvalidRange", 416, "The requested range is not satisfiable.")
PRECONDITION_FAILED = CosError(
    "PreconditionFailed", 412, "At least one of the preconditions you specified did not hold."
)
INTERNAL_ERROR = CosError(
    "InternalError", 500, "We encountered an internal error. Please try again."
)

REQUEST_ID_HEADER = b"x-cos-request-id"


def error_body(
    error: CosError, resource: str, request_id: str, message: str | None = None
) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<Error>"
        f"<Code>{escape(error.code)}</Code>"
        f"<Message>{escape(message or error.message)}</Message>"
        f"<Resource>{escape(resource)}</Resource>"
        f"<RequestId>{escape(request_id)}</RequestId>"
        "</Error>"
    ).encode()


def write_error(
    request: Request,
    error: CosError,
    resource: str,
    request_id: str,
    message: str | None = None,
) -> bytes:
    """Set status and headers for `error`; returns the body (empty for HEAD, as HTTP says)."""
    body = error_body(error, resource, request_id, message)
    request.setResponseCode(error.status)
    request.setHeader(b"content-type", b"application/xml")
    request.setHeader(b"content-length", b"%d" % len(body))
    request.setHeader(REQUEST_ID_HEADER, request_id.encode("ascii"))
    if request.method == b"HEAD":
        return b""
    return body
