"""Log observers for `twistd --logger`: JSON lines for machines, text for people."""

from __future__ import annotations

import sys

from twisted.logger import ILogObserver, jsonFileLogObserver


def json_observer() -> ILogObserver:
    """`twistd --logger edge.logs.json_observer`: one JSON event per line on stdout, with
    every named field (bucket, key, origin, reason, request_id, ...) kept as data."""
    return jsonFileLogObserver(sys.stdout)
