"""Multipart uploads end to end through the API: initiate, parts, list, complete, abort."""

from __future__ import annotations

import hashlib

import pytest_twisted

from tests.api.conftest import ApiClient


def complete_xml(*parts: tuple[int, str]) -> bytes:
    inner = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>" for n, e in parts)
    return f"<CompleteMultipartUpload>{inner}</CompleteMultipartUpload>".encode()


async def initiate(api: ApiClient, key: str) -> str:
    reply = await api.call("POST", f"/{key}", params={"uploads": ""})
    assert reply.status == 200
    upload_id = reply.xml().findtext("UploadId")
    assert upload_id
    return upload_id


@pytest_twisted.ensureDeferred
async def test_initiate_upload_complete(api: ApiClient) -> None:
    """Two parts uploaded, listed by the upload and the bucket, then completed: the object
    is their concatenation and the upload is no longer listed."""
    upload_id = await initiate(api, "big.bin")
    etags = []
    for number, data in ((1, b"first-"), (2, b"second")):
        part = await api.call(
            "PUT",
            "/big.bin",
            params={"partNumber": str(number), "uploadId": upload_id},
            body=data,
        )
        assert part.status == 200
        assert part.headers["etag"] == f'"{hashlib.md5(data).hexdigest()}"'
        etags.append(part.headers["etag"])
    parts = (await api.call("GET", "/big.bin", params={"uploadId": upload_id})).xml()
    assert [p.findtext("PartNumber") for p in parts.iterfind("Part")] == ["1", "2"]
    uploads = (await api.call("GET", "/", params={"uploads": ""})).xml()
    assert [u.findtext("UploadId") for u in uploads.iterfind("Upload")] == [upload_id]
    done = await api.call(
        "POST",
        "/big.bin",
        params={"uploadId": upload_id},
        body=complete_xml((1, etags[0]), (2, etags[1])),
    )
    assert done.status == 200
    assert done.xml().tag == "CompleteMultipartUploadResult"
    assert (await api.call("GET", "/big.bin")).body == b"first-second"
    uploads = (await api.call("GET", "/", params={"uploads": ""})).xml()
    assert list(uploads.iterfind("Upload")) == []


@pytest_twisted.ensureDeferred
async def test_multipart_refusals(api: ApiClient) -> None:
    """An unknown upload is 404 NoSuchUpload; HEAD on an upload is 405; a completion body
    that is not the document is 400 MalformedXML; an aborted upload is gone."""
    unknown = await api.call("GET", "/k", params={"uploadId": "0" * 32})
    assert (unknown.status, unknown.code()) == (404, "NoSuchUpload")
    upload_id = await initiate(api, "k")
    head = await api.call("HEAD", "/k", params={"uploadId": upload_id})
    assert head.status == 405
    bad = await api.call("POST", "/k", params={"uploadId": upload_id}, body=b"<Other/>")
    assert (bad.status, bad.code()) == (400, "MalformedXML")
    assert (await api.call("DELETE", "/k", params={"uploadId": upload_id})).status == 204
    gone = await api.call("GET", "/k", params={"uploadId": upload_id})
    assert (gone.status, gone.code()) == (404, "NoSuchUpload")
