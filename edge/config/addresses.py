"""Origin addresses as configured: a domain or IP literal with an optional port.

Parsed here, once, for the YAML, the management API and the admin tool alike, so all three
accept and refuse the same spellings with the same messages.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class OriginAddress:
    """An origin as configured: a host (domain or IP literal) and an optional port.

    `netloc` is what goes into the 302 `Location` and the `Host` header of the copy, so both
    always name the origin exactly as the operator configured it.
    """

    host: str
    port: int | None = None
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if self.ip is not None and self.ip.version == 6 else self.host
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def connect_port(self) -> int:
        return 80 if self.port is None else self.port

    def __hash__(self) -> int:
        """The fields' hash, computed once: an origin keys the miss path's caches (its
        Location prefix, its address's verdict) on every request, and hashing an IP address
        object each time showed in a 302's profile."""
        cached: int | None = self.__dict__.get("_hash")
        if cached is None:
            cached = hash((self.host, self.port, self.ip))
            object.__setattr__(self, "_hash", cached)
        return cached

    def __str__(self) -> str:
        return self.netloc

    @classmethod
    def parse(cls, text: object) -> OriginAddress:
        """Parse `host[:port]` / `[v6][:port]`; `ValueError` says what is wrong."""
        if not isinstance(text, str):
            raise ValueError(f"must be a string like 'example.com:8080', not {type(text).__name__}")
        if text == "":
            raise ValueError("is empty")
        if text != text.strip() or any(c.isspace() for c in text):
            raise ValueError(f"{text!r} contains spaces")
        if "://" in text:
            raise ValueError(
                f"{text!r} has a scheme; give host[:port] only (origins are plain HTTP)"
            )
        if "/" in text or "?" in text or "#" in text:
            raise ValueError(f"{text!r} has a path; give host[:port] only")
        if "@" in text:
            raise ValueError(f"{text!r} has user info; give host[:port] only")
        host, port_text = _split_host_port(text)
        port = _parse_port(port_text, text) if port_text is not None else None
        if host.startswith("["):
            literal = host[1:-1]
            if "%" in literal:
                raise ValueError(f"{text!r}: IPv6 zone ids are not allowed")
            try:
                v6 = ipaddress.IPv6Address(literal)
            except ValueError:
                raise ValueError(f"{text!r}: {literal!r} is not an IPv6 address") from None
            return cls(host=v6.compressed, port=port, ip=v6)
        if re.fullmatch(r"[0-9.]+", host):
            try:
                v4 = ipaddress.IPv4Address(host)
            except ValueError:
                raise ValueError(f"{text!r}: {host!r} is not a valid IPv4 address") from None
            return cls(host=str(v4), port=port, ip=v4)
        return cls(host=_check_domain(host, text), port=port)


def _split_host_port(text: str) -> tuple[str, str | None]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: '[' without ']'")
        rest = text[end + 1 :]
        if rest == "":
            return text[: end + 1], None
        if not rest.startswith(":"):
            raise ValueError(f"{text!r}: unexpected {rest!r} after ']'")
        return text[: end + 1], rest[1:]
    if text.count(":") > 1:
        raise ValueError(f"{text!r}: an IPv6 address must be in brackets, like [2001:db8::1]:8080")
    host, sep, port = text.partition(":")
    if not host:
        raise ValueError(f"{text!r} has no host")
    return host, (port if sep else None)


def _parse_port(port_text: str, text: str) -> int:
    if not port_text.isdigit() or not port_text.isascii():
        raise ValueError(f"{text!r}: port {port_text!r} is not a number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: port {port} is outside 1-65535")
    return port


def _check_domain(host: str, text: str) -> str:
    lowered = host.lower()
    if len(lowered) > 253:
        raise ValueError(f"{text!r}: host name longer than 253 characters")
    labels = lowered.split(".")
    for label in labels:
        if not _LABEL_RE.fullmatch(label):
            raise ValueError(f"{text!r}: {host!r} is not a valid host name")
    if labels[-1].isdigit():
        raise ValueError(f"{text!r}: {host!r} is not a valid host name")
    return lowered


# Loop refusal (SPEC §12): an origin that is the edge itself would have every miss copy
# from, and redirect to, the edge; the config, the API and the copier refuse it alike.


@dataclass(frozen=True)
class ListenAddress:
    """Where the edge listens: an interface (None: all of them) and a TCP port."""

    interface: str | None
    port: int

    def reaches(self, address: str, port: int) -> bool:
        """Whether a connection to `address:port` would land on this listener."""
        if port != self.port or self.port == 0:
            return False
        if self.interface is not None:
            try:
                return ipaddress.ip_address(address) == ipaddress.ip_address(self.interface)
            except ValueError:
                return False
        return is_local_address(address)


def listen_address(listen: str) -> ListenAddress | None:
    """The TCP interface and port of a Twisted endpoint string (None for a UNIX socket or
    anything else no origin address could name)."""
    from twisted.internet.endpoints import _parseServer  # the parser serverFromString uses

    try:
        kind, args, kwargs = _parseServer(listen, None)
    except (ValueError, TypeError, KeyError):
        return None
    if kind == "TCP":
        port, interface = int(args[0]), kwargs.get("interface", "")
    elif getattr(kind, "prefix", None) == "tcp6":
        port, interface = (
            int(kwargs.get("port", args[0] if args else 0)),
            kwargs.get("interface", "::"),
        )
    else:
        return None
    unspecified = interface in ("", "0.0.0.0", "::")
    return ListenAddress(None if unspecified else str(interface), port)


def is_local_address(address: str) -> bool:
    """Whether `address` is one of this machine's own: only those can be bound to, which
    is what the kernel, not a list kept here, answers."""
    import socket

    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if ip.is_unspecified or ip.is_loopback:
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((str(ip), 0))
    except OSError:
        return False
    return True


def loop_reason(
    origin: OriginAddress,
    domains: tuple[str, ...] = (),
    listening: tuple[ListenAddress, ...] = (),
    address: str | None = None,
) -> str | None:
    """Why `origin` (reached at `address`, or at its IP literal) would be the edge
    itself, or None: its host is one of the bucket's own `domains`, or the address and
    port are where the edge listens."""
    if origin.host in domains:
        return f"origin {origin.netloc} would loop: it is one of the bucket's own domains"
    target = address if address is not None else (None if origin.ip is None else str(origin.ip))
    if target is None:
        return None
    for listener in listening:
        if listener.reaches(target, origin.connect_port):
            where = f"{listener.interface or '*'}:{listener.port}"
            return (
                f"origin {origin.netloc} would loop: {target}:{origin.connect_port} is where "
                f"this edge listens ({where})"
            )
    return None
