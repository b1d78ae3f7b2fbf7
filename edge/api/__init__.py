"""The COS API: signatures, the COS error catalogue and XML codec, and the signed operations.

Everything a COS client speaks is here: request signatures (`signature`), COS's error
codes and their XML (`errors`, `cosxml`), header spelling (`headers`), the origin rules
and API-made buckets (`rules`, `buckets`) and the signed management operations: one
authenticator (`auth`), one module per operation family (`service`, `bucket`, `object`,
`multipart`, `origin`) answering through `replies`, and the entry object that routes to
them (`management`). The web layer routes a request here; this package reads and writes
objects only through the store and vets origins through the origin package.
"""
