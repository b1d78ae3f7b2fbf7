"""The origin side: resolving and vetting origin addresses, and copying objects from them.

A miss's origin host is resolved and each address judged against the ISP tables (plus
`extra_origin_cidrs`) in resolver.py; the scheduler in copier.py decides when a copy runs
(single flight per key, a bounded queue, concurrency caps, backoff, locks); fetch.py
streams one object from one accepted address into the store; client.py owns the
connections, pinned so that DNS cannot steer them elsewhere.
"""
