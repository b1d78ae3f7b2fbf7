"""Where a node's Redis is: the `coordination.redis` URL (SPEC §8), parsed and checked.

Kept in the config layer, apart from the connection code (`edge.cluster`), so start-up can
validate the URL without importing a Redis client.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

DEFAULT_PORT = 6379

_HOST_CHARS = frozenset(string.ascii_letters + string.digits + ".-_")


@dataclass(frozen=True)
class RedisAddress:
    """Where a node's Redis is: host, port, database number and optional password."""

    host: str
    port: int = DEFAULT_PORT
    db: int = 0
    password: str | None = field(default=None, repr=False)  # kept out of logs

    def __str__(self) -> str:
        """The address as it may be logged: never with the password."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{host}:{self.port}/{self.db}"


def parse_redis_url(url: str) -> RedisAddress:
    """`redis://[:password@]host[:port][/db]` as a `RedisAddress`.

    Raises ValueError saying what is wrong, worded to follow "file, key:" in a start-up
    error, for anything else (other schemes, user names, queries, bad ports or databases),
    so a typo stops start-up instead of pointing the cluster somewhere unexpected.
    """
    if not isinstance(url, str):
        raise ValueError("must be a URL like redis://host:6379/0")
    parts = urlsplit(url.strip())
    if parts.scheme != "redis":
        raise ValueError(f"must start with redis:// (got {url!r})")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise ValueError("must not have a ?query or #fragment")
    if parts.username:
        raise ValueError("a user name is not supported: give only a password, redis://:pw@host")
    password = None
    if parts.password is not None:
        password = unquote(parts.password)
        if not password:
            raise ValueError("the password after ':' and before '@' is empty")
    host = parts.hostname or ""
    if not host:
        raise ValueError("has no host (redis://host[:port][/db])")
    if ":" not in host and not set(host) <= _HOST_CHARS:
        raise ValueError(f"host {host!r} is not a host name or IP address")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("port must be a number from 1 to 65535") from None
    if port is None:
        if parts.netloc.endswith(":"):
            raise ValueError("port must be a number from 1 to 65535")
        port = DEFAULT_PORT
    elif not 1 <= port <= 65535:
        raise ValueError("port must be a number from 1 to 65535")
    path = parts.path
    if path in ("", "/"):
        db = 0
    elif path[1:].isdigit() and path[1:].isascii():
        db = int(path[1:])
    else:
        raise ValueError(f"database {path[1:]!r} must be a number (redis://host:6379/0)")
    return RedisAddress(host=host, port=port, db=db, password=password)
