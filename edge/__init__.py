"""cosedge: an edge server for object-storage buckets with back-to-origin."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cosedge")
except PackageNotFoundError:  # a checkout run without `pip install`: no metadata to read
    __version__ = "0+unknown"

del PackageNotFoundError, version
