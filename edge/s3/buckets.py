"""The S3 calls on a bucket as a whole: create, HEAD, delete, and listing its keys.

Bucket provisioning (SPEC §8: a bucket that already exists and is ours is used) and the
paged, URL-encoded key listing are about the bucket, not one object, so they sit apart from
the object and multipart calls, on `edge.s3.transport`'s plumbing.
"""

from __future__ import annotations

from urllib.parse import unquote_plus
from xml.sax.saxutils import escape

from edge.s3.errors import S3Error, child_text, error_from_response
from edge.s3.results import ListPage, ObjectSummary, children_named, iso_date, request_id_of
from edge.s3.transport import S3Transport


class BucketCalls(S3Transport):
    """The bucket-level calls of `S3Client`; see the module docstring."""

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

    async def create_bucket(self, bucket: str) -> None:
        """Create a bucket; one we already own counts as success (SPEC §8: use it).

        A refusal that says the bucket does not exist, or exists already, is checked with
        HEAD: SeaweedFS answers a create that races another node's with `NoSuchBucket`
        for seconds after the other node made it (its bucket cache lags its filer), and
        answers `BucketAlreadyExists` to its owner. A bucket HEAD can use is ours to use;
        one it cannot use (AWS: 403 for another account's) keeps the refusal."""
        body: bytes | None = None
        if self.region != "us-east-1":
            body = (
                "<CreateBucketConfiguration><LocationConstraint>"
                f"{escape(self.region)}</LocationConstraint></CreateBucketConfiguration>"
            ).encode()
        try:
            await self._call("PUT", bucket, body=body)
        except S3Error as e:
            if e.code == "BucketAlreadyOwnedByYou":
                return
            if e.code not in ("NoSuchBucket", "BucketAlreadyExists"):
                raise
            try:
                usable = await self.head_bucket(bucket)
            except S3Error:
                usable = False
            if not usable:
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
