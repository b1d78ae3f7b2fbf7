"""The S3 client: every S3 call the edge makes, on Twisted's HTTP client, signed with SigV4.

One `S3Client` per store, shared by all requests: it owns (or is given) a persistent
`HTTPConnectionPool`, so requests reuse connections instead of paying a TCP handshake each.
Every method is a coroutine (wrap with `Deferred.fromCoroutine` from Twisted code) that raises
only `S3Error`/`S3Unavailable`. The class is assembled from one group of calls per concept
(`edge.s3.objects`, `edge.s3.multipart`, `edge.s3.buckets`) over the shared request plumbing
of `edge.s3.transport`, which also documents how payloads are hashed and failures mapped.
"""

from __future__ import annotations

from edge.s3.buckets import BucketCalls
from edge.s3.multipart import MultipartCalls
from edge.s3.objects import ObjectCalls


class S3Client(ObjectCalls, MultipartCalls, BucketCalls):
    """A client for one S3 endpoint and one set of credentials; see the module docstring.

    `S3Client(endpoint, region, access_key_id, secret_access_key, pool=None, reactor=None,
    timeout=30, signer=None)`, as `edge.s3.transport.S3Transport` takes them.
    """
