"""COS-style XML error responses, rendered in one place.

Every error the edge answers, including the ones from a bug, goes through `write_error`, so
clients always get COS's XML shape and the request id, never Twisted's HTML pages.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from twisted.web.server import Request

from edge.api import cosxml
from edge.api.headers import send_as_is
from edge.problems import CosProblem as CosProblem  # re-exported for the web layer


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

# The management API's (SPEC §7), with COS's codes and statuses.
SIGNATURE_DOES_NOT_MATCH = CosError(
    "SignatureDoesNotMatch", 403, "The Signature you specified is invalid."
)
REQUEST_TIME_TOO_SKEWED = CosError(
    "RequestTimeTooSkewed",
    403,
    "The difference between the request time and the server's time is too large.",
)
INVALID_ACCESS_KEY_ID = CosError(
    "InvalidAccessKeyId", 403, "The access key Id format you provided is invalid."
)
METHOD_NOT_ALLOWED = CosError(
    "MethodNotAllowed", 405, "The specified method is not allowed against this resource."
)
NOT_IMPLEMENTED = CosError(
    "NotImplemented", 501, "A header you provided implies functionality that is not implemented."
)
# A Mirror miss whose origin gave no body (SPEC §11); the message names the origin's answer.
FAILED_DEPENDENCY = CosError("FailedDependency", 424, "The origin did not return the object.")
NO_SUCH_ORIGIN = CosError(
    "NoSuchOriginConfiguration", 404, "The origin configuration does not exist."
)
INVALID_BUCKET_NAME = CosError("InvalidBucketName", 400, "The specified bucket is not valid.")
BUCKET_ALREADY_EXISTS = CosError(
    "BucketAlreadyExists", 409, "The requested bucket name is not available."
)
BUCKET_NOT_EMPTY = CosError("BucketNotEmpty", 409, "The bucket you tried to delete is not empty.")
INVALID_ARGUMENT = CosError("InvalidArgument", 400, "Invalid Argument.")
INVALID_DIGEST = CosError("InvalidDigest", 400, "The Content-MD5 you specified is not valid.")
BAD_DIGEST = CosError(
    "BadDigest", 400, "The Content-MD5 you specified did not match what we received."
)
ENTITY_TOO_LARGE = CosError(
    "EntityTooLarge", 400, "Your proposed upload exceeds the maximum allowed object size."
)
MALFORMED_XML = CosError(
    "MalformedXML", 400, "The XML you provided was not well-formed or did not validate."
)

NO_SUCH_UPLOAD = CosError("NoSuchUpload", 404, "The specified upload does not exist.")
INVALID_PART = CosError(
    "InvalidPart", 400, "One or more of the specified parts could not be found."
)
INVALID_PART_ORDER = CosError(
    "InvalidPartOrder", 400, "The list of parts was not in ascending order."
)

# Refusals of a request body before or while it is read (edge.web.bodies).
INVALID_REQUEST = CosError("InvalidRequest", 400, "This request does not take a body.")
SLOW_DOWN = CosError("SlowDown", 503, "Please reduce your request rate.")
SERVICE_UNAVAILABLE = CosError(
    "ServiceUnavailable", 503, "Service is unable to handle request. Please try again."
)


_BY_CODE = {e.code: e for e in list(globals().values()) if isinstance(e, CosError)}


def by_code(code: str) -> CosError:
    """The error to answer for a COS code (InvalidArgument for one this edge never sends)."""
    return _BY_CODE.get(code, INVALID_ARGUMENT)


REQUEST_ID_HEADER = send_as_is(b"x-cos-request-id")


def resource_of(request: Request) -> str:
    """The `<Resource>` of an error: host and path as the client sent them."""
    host = request.getHeader(b"host") or b""
    path = request.uri.partition(b"?")[0]
    return (host + path).decode("latin-1")


def error_body(
    error: CosError, resource: str, request_id: str, message: str | None = None
) -> bytes:
    root = cosxml.element("Error")
    cosxml.sub(root, "Code", error.code)
    cosxml.sub(root, "Message", message or error.message)
    cosxml.sub(root, "Resource", resource)
    cosxml.sub(root, "RequestId", request_id)
    return cosxml.document(root)


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


# Query parameters whose values are credentials or signatures: a pre-signed URL's `q-*`
# fields and a temporary key's token.
_SECRET_PARAMS = ("q-", "x-cos-security-token")
REDACTED = b"REDACTED"


def redact_uri(uri: bytes) -> bytes:
    """`uri` with the value of every signature parameter replaced by `REDACTED`.

    For the access log: a pre-signed URL is a bearer credential until it expires, so
    whoever reads the log must not be able to replay it. Names are judged decoded and
    lowercased, as the signature check reads them (`q%2Dsignature` is `q-signature`).
    """
    path, sep, query = uri.partition(b"?")
    if not sep or not query:
        return uri
    kept = []
    for part in query.split(b"&"):
        name = part.partition(b"=")[0]
        decoded = urllib.parse.unquote_plus(name.decode("latin-1")).strip().lower()
        if decoded.startswith(_SECRET_PARAMS):
            kept.append(name + b"=" + REDACTED)
        else:
            kept.append(part)
    return path + b"?" + b"&".join(kept)
