"""`?origin`: a bucket's back-to-origin rules set, read back and removed through the API."""

from __future__ import annotations

import pytest_twisted

from tests.api.conftest import ApiClient


def origin_xml(host: str) -> bytes:
    return (
        "<OriginConfiguration><OriginRule><RulePriority>1</RulePriority>"
        "<OriginType>Proxy</OriginType>"
        "<OriginCondition><HTTPStatusCode>404</HTTPStatusCode><Prefix>img/</Prefix>"
        "</OriginCondition>"
        f"<OriginInfo><HostInfo><HostName>{host}</HostName></HostInfo></OriginInfo>"
        "</OriginRule></OriginConfiguration>"
    ).encode()


@pytest_twisted.ensureDeferred
async def test_put_get_delete_round_trip(api: ApiClient) -> None:
    """Rules PUT are what GET shows (host and prefix); after DELETE, GET is 404
    NoSuchOriginConfiguration."""
    put = await api.call("PUT", "/", params={"origin": ""}, body=origin_xml("127.0.0.1:8080"))
    assert put.status == 200
    got = await api.call("GET", "/", params={"origin": ""})
    assert got.status == 200
    rule = got.xml().find("OriginRule")
    assert rule is not None
    assert rule.findtext("OriginInfo/HostInfo/HostName") == "127.0.0.1:8080"
    assert rule.findtext("OriginCondition/Prefix") == "img/"
    assert (await api.call("DELETE", "/", params={"origin": ""})).status == 204
    after = await api.call("GET", "/", params={"origin": ""})
    assert (after.status, after.code()) == (404, "NoSuchOriginConfiguration")


@pytest_twisted.ensureDeferred
async def test_origin_refusals(api: ApiClient) -> None:
    """A private origin address is 400 InvalidArgument and nothing is saved; POST is 405;
    an unknown bucket is 404; a body that is not XML is 400 MalformedXML."""
    private = await api.call("PUT", "/", params={"origin": ""}, body=origin_xml("10.0.0.1"))
    assert (private.status, private.code()) == (400, "InvalidArgument")
    nothing = await api.call("GET", "/", params={"origin": ""})
    assert nothing.status == 404
    post = await api.call("POST", "/", params={"origin": ""})
    assert (post.status, post.code()) == (405, "MethodNotAllowed")
    missing = await api.call(
        "GET", "/nobucket-1250000000/", host="127.0.0.1", params={"origin": ""}
    )
    assert (missing.status, missing.code()) == (404, "NoSuchBucket")
    garbled = await api.call("PUT", "/", params={"origin": ""}, body=b"not xml")
    assert (garbled.status, garbled.code()) == (400, "MalformedXML")
