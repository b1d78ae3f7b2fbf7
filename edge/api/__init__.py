"""The COS API: signatures, the COS error catalogue and XML codec, and the signed operations.

Everything a COS client speaks is here: request signatures (`signature`), COS's error
codes and their XML (`errors`, `cosxml`), header spelling (`headers`), the origin rules
and API-made buckets (`rules`, `buckets`) and the handlers of the signed management
operations. The web layer routes a request here; this package reads and writes objects
only through the store and vets origins through the origin package.
"""
