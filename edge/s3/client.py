"""The S3 client: every S3 call the edge makes, on Twisted's HTTP client, signed with SigV4.

One `S3Client` per store, shared by all requests: it owns (or is given) a persistent
`HTTPConnectionPool`, so requests reuse connections instead of paying a TCP handshake each.
Every method is a coroutine (wrap with `Deferred.fromCoroutine` from Twisted code) that raises
only `S3Error`/`S3Unavailable`. Paths are always path-style (`endpoint/bucket/key`): stores on
loopback or behind one host name have no per-bucket DNS.

Payload hashes (`x-amz-content-sha256`): bodies from `FileRangeProducer` and `bytes` are hashed
(files in a thread) and signed, because strict stores (Ceph RGW, AWS over http) reject
`UNSIGNED-PAYLOAD` or treat it as a weaker request; only a caller's own producer of unknown
content is sent as `UNSIGNED-PAYLOAD`, unless the caller passes `payload_sha256`. (SeaweedFS
4.48 accepts either and does not check the hash; the choice is for the stricter stores.)

A local file that cannot be read while its body is being sent surfaces as `S3Unavailable` too:
Twisted reports it as the request failing to go out, indistinguishable from a lost connection.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, cast
from urllib.parse import quote, unquote_plus, urlsplit
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape

from twisted.internet import error as neterror
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    RequestGenerationFailed,
    RequestNotSent,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
    _HTTP11ClientFactory,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer, IResponse

from edge.s3.bodies import (
    BytesProducer,
    Collector,
    FileRangeProducer,
    TouchingProducer,
    Watchdog,
)
from edge.s3.errors import (
    S3Error,
    S3Unavailable,
    child_text,
    error_from_response,
    local_name,
    parse_xml,
)
from edge.s3.results import (
    ListPage,
    ObjectInfo,
    ObjectStream,
    ObjectSummary,
    Part,
    Upload,
    children_named,
    header_value,
    iso_date,
    metadata_headers,
    object_info,
    request_id_of,
)
from edge.s3.signing import EMPTY_SHA256, UNSIGNED_PAYLOAD, Signer, encode_key, encode_query

log = Logger()

#: Failures that mean "the store is not reachable / stopped answering", never a caller bug.
_NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    neterror.ConnectError,
    neterror.ConnectionLost,
    neterror.ConnectionDone,
    neterror.TimeoutError,
    neterror.DNSLookupError,
    ResponseFailed,
    ResponseNeverReceived,
    RequestNotSent,
    RequestTransmissionFailed,
    RequestGenerationFailed,
    CancelledError,
    OSError,
)

#: Bodies above this are hashed in a thread even when they are already in memory.
_INLINE_HASH_LIMIT = 1024 * 1024


class S3Client:
    """A client for one S3 endpoint and one set of credentials; see the module docstring."""

    def __init__(
        self,
        endpoint: str,
        region: str,
        access_key_id: str,
        secret_access_key: str,
        pool: HTTPConnectionPool | None = None,
        reactor: Any = None,
        timeout: float = 30,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"endpoint must be http(s)://host[:port], not {endpoint!r}")
        self.endpoint = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self.region = region
        self._reactor = reactor
        self._timeout = timeout
        self._owns_pool = pool is None
        if pool is None:
            pool = _ClosablePool(reactor, persistent=True)
            pool.maxPersistentPerHost = 32
            # Below the idle timeouts of common stores (SeaweedFS 30 s), so a cached connection
            # is dropped by us before the store closes it under a request.
            pool.cachedConnectionTimeout = 20
        self._pool = pool
        self._agent = Agent(reactor, pool=pool)
        self._signer = Signer(access_key_id, secret_access_key, region)

    async def close(self) -> None:
        """Close the pool's idle connections if the pool is ours (not one passed in)."""
        if self._owns_pool:
            if isinstance(self._pool, _ClosablePool):
                self._pool.closed = True
            await self._pool.closeCachedConnections()

    # -- the exchange every call goes through -------------------------------------------------

    def _url(self, bucket: str, key: str | None, query: Mapping[str, str | None] | None) -> str:
        path = "/" + quote(bucket, safe="")
        if key is not None:
            path += "/" + encode_key(key)
        url = self.endpoint + path
        if query:
            url += "?" + encode_query(query)
        return url

    async def _payload(
        self, body: bytes | IBodyProducer | None, sha: str | None
    ) -> tuple[IBodyProducer | None, str]:
        if body is None:
            return None, EMPTY_SHA256
        if isinstance(body, bytes):
            if sha is None:
                if len(body) > _INLINE_HASH_LIMIT:
                    sha = await deferToThread(lambda: hashlib.sha256(body).hexdigest())
                else:
                    sha = hashlib.sha256(body).hexdigest()
            return BytesProducer(body), sha
        if body.length == UNKNOWN_LENGTH:
            raise ValueError("S3 needs the body's length up front (no chunked uploads)")
        if sha is None and isinstance(body, FileRangeProducer):
            try:
                sha = await body.sha256()
            except OSError as e:
                raise ValueError(f"cannot read the body file: {e}") from e
        return body, sha or UNSIGNED_PAYLOAD

    async def _send(
        self,
        method: str,
        bucket: str,
        key: str | None = None,
        query: Mapping[str, str | None] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | IBodyProducer | None = None,
        payload_sha256: str | None = None,
    ) -> IResponse:
        """Sign and send one request; return the response once its headers are in.

        The idle watchdog covers connecting, sending the body (touched by every chunk) and
        waiting for the answer, so a dead store fails in `timeout` seconds, not a TCP timeout.
        """
        url = self._url(bucket, key, query)
        producer, sha = await self._payload(body, payload_sha256)
        signed = self._signer.sign(method, url, headers or {}, sha)
        request_headers = Headers({name: [value] for name, value in signed.items()})
        pending: list[Deferred[IResponse]] = []
        watchdog = Watchdog(self._reactor, self._timeout, lambda: pending[0].cancel())
        if producer is not None:
            producer = TouchingProducer(producer, watchdog)
        d = self._agent.request(method.encode(), url.encode("ascii"), request_headers, producer)
        pending.append(d)
        try:
            return cast(IResponse, await d)
        except _NETWORK_ERRORS as e:
            if watchdog.expired:
                why = f"no answer from the store within {self._timeout:g} s"
            elif _cancelled(e):
                # The caller cancelled: theirs to handle, not an outage. (Once the request is
                # out, Twisted wraps the cancellation in ResponseNeverReceived.)
                raise CancelledError() from None
            else:
                why = _describe(e)
            # Debug only: the store built on this client logs one warning per outage (SPEC §8).
            log.debug("S3 {method} {url} failed: {why}", method=method, url=url, why=why)
            raise S3Unavailable(f"{why} ({method} {url})") from None
        finally:
            watchdog.stop()

    async def _read(self, response: IResponse) -> bytes:
        collector = Collector(self._reactor, self._timeout)
        response.deliverBody(collector)
        return await collector.finished

    async def _fail(self, response: IResponse) -> S3Error:
        try:
            body = await self._read(response)
        except S3Unavailable:
            body = b""
        return error_from_response(response.code, body, request_id_of(response))

    async def _call(
        self,
        method: str,
        bucket: str,
        key: str | None = None,
        query: Mapping[str, str | None] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | IBodyProducer | None = None,
        payload_sha256: str | None = None,
    ) -> tuple[IResponse, bytes]:
        """`_send` for calls with small answers: the body is read, errors are raised."""
        response = await self._send(method, bucket, key, query, headers, body, payload_sha256)
        if response.code >= 300:
            raise await self._fail(response)
        data = await self._read(response)
        # CompleteMultipartUpload (and copies) may answer 200 with an <Error> body.
        if data.lstrip().startswith(b"<") and method == "POST":
            root = parse_xml(data)
            if root is not None and local_name(root) == "Error":
                raise error_from_response(500, data, request_id_of(response))
        return response, data

    async def _xml(self, data: bytes) -> Element:
        root = parse_xml(data)
        if root is None:
            raise S3Unavailable("store answered with a body that is not XML", 200, "BadXML")
        return root

    # -- objects --------------------------------------------------------------------------

    async def head_object(self, bucket: str, key: str) -> ObjectInfo | None:
        """The object's info, or None when there is no such key (or no such bucket: HEAD
        answers carry no body to tell the two apart)."""
        response = await self._send("HEAD", bucket, key)
        await self._read(response)
        if response.code == 404:
            return None
        if response.code >= 300:
            raise error_from_response(response.code, b"", request_id_of(response))
        return object_info(response)

    async def get_object(
        self, bucket: str, key: str, range: str | None = None, if_match: str | None = None
    ) -> ObjectStream | None:
        """Start a GET (optionally `Range: bytes=...`); None when the key does not exist.

        Returns as soon as the headers are in: the body is taken from the `ObjectStream`.
        A range the object cannot satisfy raises S3Error 416 `InvalidRange`. With `if_match`
        (a quoted ETag) an object replaced since is S3Error 412 `PreconditionFailed`, so a
        second GET for another range of an object never mixes two versions.
        """
        headers = {"Range": range} if range else {}
        if if_match:
            headers["If-Match"] = if_match
        response = await self._send("GET", bucket, key, headers=headers)
        if response.code >= 300:
            error = await self._fail(response)
            if error.code == "NoSuchKey" or (response.code == 404 and error.code == "NotFound"):
                return None
            raise error
        return ObjectStream(response, object_info(response), self._reactor, self._timeout)

    async def put_object(
        self,
        bucket: str,
        key: str,
        body: bytes | IBodyProducer,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        if_none_match: bool = False,
        payload_sha256: str | None = None,
    ) -> str:
        """Store an object whole; returns its ETag (quoted).

        `body` is bytes or a producer of known length (`FileRangeProducer` for anything big).
        With `if_none_match` the request carries `If-None-Match: *`, so a store that supports
        it refuses to overwrite (S3Error 412 `PreconditionFailed`); others just overwrite.
        """
        headers = metadata_headers(metadata)
        headers["Content-Type"] = content_type or "application/octet-stream"
        if if_none_match:
            headers["If-None-Match"] = "*"
        response, _ = await self._call("PUT", bucket, key, None, headers, body, payload_sha256)
        return header_value(response, "etag") or ""

    async def delete_object(self, bucket: str, key: str) -> None:
        """Delete an object; deleting a missing key succeeds, as in S3."""
        await self._call("DELETE", bucket, key)

    async def list_objects_v2(
        self,
        bucket: str,
        prefix: str | None = None,
        delimiter: str | None = None,
        max_keys: int | None = None,
        start_after: str | None = None,
        continuation_token: str | None = None,
    ) -> ListPage:
        """One page of the bucket's keys (ascending), with common prefixes under `delimiter`.

        Asks for `encoding-type=url` so keys with characters XML cannot carry come back intact,
        and decodes (form-style: S3 writes a space as `+`) only when the store says it encoded.
        """
        query: dict[str, str | None] = {"list-type": "2", "encoding-type": "url"}
        for name, value in (
            ("prefix", prefix),
            ("delimiter", delimiter),
            ("max-keys", None if max_keys is None else str(max_keys)),
            ("start-after", start_after),
            ("continuation-token", continuation_token),
        ):
            if value is not None:
                query[name] = value
        _, data = await self._call("GET", bucket, query=query)
        root = await self._xml(data)
        encoded = (child_text(root, "EncodingType") or "").lower() == "url"

        def decode(text: str | None) -> str:
            text = text or ""
            return unquote_plus(text) if encoded else text

        contents = [
            ObjectSummary(
                key=decode(child_text(item, "Key")),
                size=int(child_text(item, "Size") or 0),
                etag=child_text(item, "ETag") or "",
                last_modified=iso_date(child_text(item, "LastModified")),
            )
            for item in children_named(root, "Contents")
        ]
        prefixes = [decode(child_text(p, "Prefix")) for p in children_named(root, "CommonPrefixes")]
        truncated = (child_text(root, "IsTruncated") or "").lower() == "true"
        token = child_text(root, "NextContinuationToken")
        return ListPage(contents, prefixes, truncated, token or None)

    # -- multipart ------------------------------------------------------------------------

    async def create_multipart_upload(
        self,
        bucket: str,
        key: str,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Start a multipart upload; returns its upload id. Type and metadata are set here."""
        headers = metadata_headers(metadata)
        headers["Content-Type"] = content_type or "application/octet-stream"
        _, data = await self._call("POST", bucket, key, {"uploads": None}, headers)
        upload_id = child_text(await self._xml(data), "UploadId")
        if not upload_id:
            raise S3Unavailable("store started an upload without an UploadId", 200, "BadXML")
        return upload_id

    async def upload_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        part_number: int,
        body: bytes | IBodyProducer,
        payload_sha256: str | None = None,
    ) -> str:
        """Upload part `part_number` (1..10000); returns the part's ETag for completion."""
        query = {"partNumber": str(part_number), "uploadId": upload_id}
        response, _ = await self._call("PUT", bucket, key, query, None, body, payload_sha256)
        etag = header_value(response, "etag")
        if not etag:
            raise S3Unavailable("store accepted a part without an ETag", response.code, "BadETag")
        return etag

    async def complete_multipart_upload(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        parts: Sequence[tuple[int, str]],
        if_none_match: bool = False,
    ) -> str:
        """Join the parts (number, ETag) into the object; returns the object's ETag.

        With `if_none_match`, `If-None-Match: *` makes a store that supports it (SeaweedFS
        4.48, AWS) refuse to replace an existing key (S3Error 412); the upload then stays
        open, for the caller to abort."""
        xml = "".join(
            f"<Part><PartNumber>{n}</PartNumber><ETag>{escape(etag)}</ETag></Part>"
            for n, etag in sorted(parts)
        )
        body = f"<CompleteMultipartUpload>{xml}</CompleteMultipartUpload>".encode()
        headers = {"Content-Type": "application/xml"}
        if if_none_match:
            headers["If-None-Match"] = "*"
        _, data = await self._call("POST", bucket, key, {"uploadId": upload_id}, headers, body)
        root = parse_xml(data) if data.strip() else None
        return (child_text(root, "ETag") if root is not None else None) or ""

    async def list_parts(self, bucket: str, key: str, upload_id: str) -> list[Part]:
        """Every uploaded part of an upload (all pages), by part number; S3Error 404
        `NoSuchUpload` when the upload is not (or no longer) there."""
        parts: list[Part] = []
        marker: str | None = None
        while True:
            query: dict[str, str | None] = {"uploadId": upload_id}
            if marker:
                query["part-number-marker"] = marker
            _, data = await self._call("GET", bucket, key, query)
            root = await self._xml(data)
            for item in children_named(root, "Part"):
                parts.append(
                    Part(
                        number=int(child_text(item, "PartNumber") or 0),
                        etag=child_text(item, "ETag") or "",
                        size=int(child_text(item, "Size") or 0),
                        last_modified=iso_date(child_text(item, "LastModified")),
                    )
                )
            marker = child_text(root, "NextPartNumberMarker")
            truncated = (child_text(root, "IsTruncated") or "").lower() == "true"
            if not truncated or not marker:
                return sorted(parts, key=lambda p: p.number)

    async def abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None:
        """Abort an upload and drop its parts."""
        await self._call("DELETE", bucket, key, {"uploadId": upload_id})

    async def list_multipart_uploads(self, bucket: str, prefix: str | None = None) -> list[Upload]:
        """All uploads in progress (every page), oldest key first."""
        uploads: list[Upload] = []
        markers: dict[str, str | None] = {}
        while True:
            query: dict[str, str | None] = {"uploads": None, **markers}
            if prefix is not None:
                query["prefix"] = prefix
            _, data = await self._call("GET", bucket, query=query)
            root = await self._xml(data)
            for item in children_named(root, "Upload"):
                uploads.append(
                    Upload(
                        key=child_text(item, "Key") or "",
                        upload_id=child_text(item, "UploadId") or "",
                        initiated=iso_date(child_text(item, "Initiated")),
                    )
                )
            key_marker = child_text(root, "NextKeyMarker")
            id_marker = child_text(root, "NextUploadIdMarker")
            truncated = (child_text(root, "IsTruncated") or "").lower() == "true"
            if not truncated or not (key_marker or id_marker):
                return uploads
            markers = {"key-marker": key_marker or "", "upload-id-marker": id_marker or ""}

    # -- buckets --------------------------------------------------------------------------

    async def create_bucket(self, bucket: str) -> None:
        """Create a bucket; one we already own counts as success (SPEC §8: use it)."""
        body: bytes | None = None
        if self.region != "us-east-1":
            body = (
                "<CreateBucketConfiguration><LocationConstraint>"
                f"{escape(self.region)}</LocationConstraint></CreateBucketConfiguration>"
            ).encode()
        try:
            await self._call("PUT", bucket, body=body)
        except S3Error as e:
            if e.code != "BucketAlreadyOwnedByYou":
                raise

    async def head_bucket(self, bucket: str) -> bool:
        """Whether the bucket exists (and we may use it: 403 raises)."""
        response = await self._send("HEAD", bucket)
        await self._read(response)
        if response.code == 404:
            return False
        if response.code >= 300:
            raise error_from_response(response.code, b"", request_id_of(response))
        return True

    async def delete_bucket(self, bucket: str) -> None:
        """Delete an empty bucket (S3Error 409 `BucketNotEmpty` otherwise)."""
        await self._call("DELETE", bucket)


class _QuietFactory(_HTTP11ClientFactory):
    """Twisted's per-connection factory without its "Starting factory" log lines: a
    store client opens connections all day, and each line would say nothing."""

    noisy = False


class _ClosablePool(HTTPConnectionPool):
    """A pool that, once closed, closes connections its requests still in flight hand
    back instead of caching them (each cached one would leave an idle-timeout timer)."""

    closed = False
    _factory = _QuietFactory

    def _putConnection(self, key: Any, connection: Any) -> None:
        if self.closed:
            connection.transport.loseConnection()
            return
        super()._putConnection(key, connection)


def _cancelled(e: BaseException) -> bool:
    if isinstance(e, CancelledError):
        return True
    return any(r.check(CancelledError) for r in getattr(e, "reasons", None) or ())


def _describe(e: BaseException) -> str:
    reasons = getattr(e, "reasons", None)
    if reasons:
        return "; ".join(r.getErrorMessage() for r in reasons) or type(e).__name__
    return str(e) or type(e).__name__
