"""The S3 store: edge buckets kept in an S3-compatible object store that many edge nodes
share (SPEC §8), the second implementation of `edge.store.interface.ObjectStore` beside the
folder store. Hits stream from the store, writes are gathered in local scratch and published
whole, deletes racing copies on other nodes are told apart through Redis.
"""

from edge.store.s3.deletes import S3DeleteWatch
from edge.store.s3.objects import S3Object
from edge.store.s3.store import S3Store
from edge.store.s3.uploads import CompletingUpload, S3Uploads
from edge.store.s3.writes import S3PendingWrite

__all__ = [
    "CompletingUpload",
    "S3DeleteWatch",
    "S3Object",
    "S3PendingWrite",
    "S3Store",
    "S3Uploads",
]
