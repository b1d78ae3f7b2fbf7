"""The origin side: resolving and vetting origin addresses, and copying objects from them.

A miss's origin host is resolved and each address judged against the ISP tables (plus
`extra_origin_cidrs`, and refused when it is the edge itself) in resolver.py; the scheduler
in copier.py decides when a copy runs (single flight per key, a bounded queue, locks), with
slots.py's caps in all and per origin, and protection.py's per-key backoff and per-origin
circuit breakers; fetch.py streams one object from one accepted address into the store;
probe.py is the dry run's HEAD; client.py owns the connections, pinned so that DNS cannot
steer them elsewhere.
"""
