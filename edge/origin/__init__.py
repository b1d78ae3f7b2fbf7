"""The origin side: resolving and vetting origin addresses, and copying objects from them.

A miss's origin host is resolved and each address judged against the ISP tables (plus
`extra_origin_cidrs`); the copier then fetches the object from one accepted address,
pinned so that DNS cannot steer the connection elsewhere, and hands the bytes to the
store. The copier schedules (single flight per key, a bounded queue, concurrency caps,
locks); the fetch streams one object.
"""
