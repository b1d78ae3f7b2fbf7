"""The one exception hierarchy of the S3 client, and the parsing of S3's XML error bodies.

The edge answers differently for "the store said no" (an S3 error code it can map to a COS
error) and "the store cannot be reached" (COS 503 ServiceUnavailable, SPEC §8), so those are the
two types; no Twisted failure type crosses the client's boundary.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element

from defusedxml import ElementTree as SafeET


class S3Error(Exception):
    """The store answered a request with an error.

    `status` is the HTTP status (0 when no response arrived), `code` the S3 error code
    (`NoSuchKey`, `AccessDenied`, ...), `request_id` the store's id for its logs.
    """

    def __init__(self, status: int, code: str, message: str = "", request_id: str = "") -> None:
        super().__init__(status, code, message, request_id)
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id

    def __str__(self) -> str:
        text = f"{self.status} {self.code}"
        if self.message:
            text += f": {self.message}"
        if self.request_id:
            text += f" (request {self.request_id})"
        return text


class S3Unavailable(S3Error):
    """The store could not be reached or could not serve: the edge answers 503 for these.

    Raised for refused or lost connections, timeouts, 502/503/504 answers, and any 5xx whose
    body is not an S3 error document (a proxy's page, an empty body).
    """

    def __init__(
        self, message: str, status: int = 0, code: str = "ServiceUnavailable", request_id: str = ""
    ) -> None:
        super().__init__(status, code, message, request_id)


def local_name(element: Element) -> str:
    """The tag without its `{namespace}`: stores differ in whether they namespace their XML."""
    return element.tag.rpartition("}")[2]


def child_text(element: Element, name: str) -> str | None:
    """The text of the first direct child called `name` (namespace ignored), or None."""
    for child in element:
        if local_name(child) == name:
            return child.text or ""
    return None


def parse_xml(body: bytes) -> Element | None:
    """Parse a response body without DTDs or entities, or None when it is not XML at all."""
    try:
        root: Element = SafeET.fromstring(body)
    except Exception:  # noqa: BLE001 - defusedxml raises several types; none is actionable
        return None
    return root


def error_from_response(status: int, body: bytes, request_id: str = "") -> S3Error:
    """Turn a non-2xx answer into the exception the caller sees.

    The S3 `<Error>` document gives the code; without one (HEAD has no body, a proxy answers
    HTML) the code is derived from the status so callers can still test `code`.
    """
    root = parse_xml(body) if body else None
    if root is not None and local_name(root) == "Error":
        code = child_text(root, "Code") or _code_for_status(status)
        message = child_text(root, "Message") or ""
        request_id = child_text(root, "RequestId") or request_id
        if status in (502, 503, 504):
            return S3Unavailable(message or code, status, code, request_id)
        return S3Error(status, code, message, request_id)
    if status >= 500:
        return S3Unavailable(f"store answered {status} without an S3 error", status)
    return S3Error(status, _code_for_status(status), "", request_id)


def _code_for_status(status: int) -> str:
    return {
        301: "PermanentRedirect",
        304: "NotModified",
        400: "BadRequest",
        403: "AccessDenied",
        404: "NotFound",
        409: "Conflict",
        412: "PreconditionFailed",
        416: "InvalidRange",
    }.get(status, f"HTTP{status}")
