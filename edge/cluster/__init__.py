"""What lets several edge nodes share one S3 store (SPEC §8): the coordination they need
beyond the store itself. `edge.cluster.redis` owns the Redis side of that: the connection
each node keeps to the shared Redis, the per-key copy locks that keep an origin fetch to
one node at a time (renewed while held, expiring by themselves when a node dies), and the
pub/sub channel that tells every node about bucket and rule changes; all of it failing
fast with `RedisUnavailable` during an outage and recovering on its own afterwards.
"""
