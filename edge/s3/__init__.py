"""A streaming S3 client that runs on the Twisted reactor, for buckets kept in an S3 store.

SPEC §8 lets buckets live in an S3-compatible store (SeaweedFS, Ceph RGW, MinIO, COS) shared by
many edge nodes. The edge never blocks its reactor and never holds a whole object in memory, so
the ready-made clients (boto3, which is blocking; aiobotocore, which needs asyncio) do not fit:
this package does every request with Twisted's HTTP client on a persistent connection pool, uses
botocore only to compute SigV4 signatures (pure CPU), streams object bodies in both directions
with backpressure, and turns every failure into one exception hierarchy (`S3Error`, with
`S3Unavailable` for a store that cannot be reached) the edge can answer from.
"""

from edge.s3.bodies import FileRangeProducer, sha256_of_file
from edge.s3.client import S3Client
from edge.s3.errors import S3Error, S3Unavailable
from edge.s3.results import ListPage, ObjectInfo, ObjectStream, ObjectSummary, Part, Upload

__all__ = [
    "FileRangeProducer",
    "ListPage",
    "ObjectInfo",
    "ObjectStream",
    "ObjectSummary",
    "Part",
    "S3Client",
    "S3Error",
    "S3Unavailable",
    "Upload",
    "sha256_of_file",
]
