"""Special-purpose address space (IANA registries, IPv4 and IPv6).

Two readers need the same list: the origin policy, which never lets a table line open the
way to these addresses, and the table updater, which drops them from its inputs with a count
so a bad source cannot smuggle them into a table in the first place.
"""

from __future__ import annotations

# (CIDR, what it is) — IANA special-purpose registries, IPv4 and IPv6.
SPECIAL_RANGES: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "unspecified ('this network') address"),
    ("10.0.0.0/8", "private address"),
    ("100.64.0.0/10", "shared (CGNAT) address"),
    ("127.0.0.0/8", "loopback address"),
    ("169.254.0.0/16", "link-local address"),
    ("172.16.0.0/12", "private address"),
    ("192.0.0.0/24", "IETF protocol assignment"),
    ("192.0.2.0/24", "documentation address"),
    ("192.88.99.0/24", "6to4 relay anycast address"),
    ("192.168.0.0/16", "private address"),
    ("198.18.0.0/15", "benchmarking address"),
    ("198.51.100.0/24", "documentation address"),
    ("203.0.113.0/24", "documentation address"),
    ("224.0.0.0/4", "multicast address"),
    ("240.0.0.0/4", "reserved address"),
    ("255.255.255.255/32", "broadcast address"),
    ("::/128", "unspecified address"),
    ("::1/128", "loopback address"),
    ("64:ff9b::/96", "NAT64 address"),
    ("64:ff9b:1::/48", "NAT64 address"),
    ("100::/64", "discard-only address"),
    ("2001::/32", "Teredo address"),
    ("2001:10::/28", "ORCHID address"),
    ("2001:20::/28", "ORCHID address"),
    ("2001:db8::/32", "documentation address"),
    ("2002::/16", "6to4 address"),
    ("3fff::/20", "documentation address"),
    ("fc00::/7", "private (unique local) address"),
    ("fe80::/10", "link-local address"),
    ("fec0::/10", "site-local address"),
    ("ff00::/8", "multicast address"),
)
