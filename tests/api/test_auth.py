"""The one authenticator: a request whose signature does not check out never reaches an
operation, and is answered with COS's XML error naming why."""

from __future__ import annotations

import pytest_twisted

from edge.testing.deferreds import fired
from tests.api.conftest import BUCKET, ApiClient


@pytest_twisted.ensureDeferred
async def test_wrong_secret_is_403_signature_does_not_match(api: ApiClient) -> None:
    """A signature made with another secret is 403 SignatureDoesNotMatch in COS XML, with
    the request id the response header carries, and nothing is stored."""
    reply = await api.call("PUT", "/k.txt", body=b"data", secret_key="not-the-secret")
    assert reply.status == 403
    assert reply.headers["content-type"] == "application/xml"
    root = reply.xml()
    assert root.tag == "Error"
    assert root.findtext("Code") == "SignatureDoesNotMatch"
    assert root.findtext("RequestId") == reply.headers["x-cos-request-id"]
    assert fired(api.store.open_object(BUCKET, "k.txt")) is None


@pytest_twisted.ensureDeferred
async def test_signature_for_another_path_does_not_match(api: ApiClient) -> None:
    """A valid signature is bound to the path it signed: replayed on another key it is
    refused, so a captured signature cannot write elsewhere."""
    reply = await api.call("DELETE", "/victim", signed_path="/other")
    assert (reply.status, reply.code()) == (403, "SignatureDoesNotMatch")


@pytest_twisted.ensureDeferred
async def test_unknown_key_id_is_403(api: ApiClient) -> None:
    """A key id the edge was never given is refused as COS refuses it."""
    reply = await api.call("GET", "/k", secret_id="AKIDnobody", secret_key="x")
    assert (reply.status, reply.code()) == (403, "InvalidAccessKeyId")
