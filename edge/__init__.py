"""cosedge: an edge server for object-storage buckets with back-to-origin."""

__version__ = "0.1.0"
