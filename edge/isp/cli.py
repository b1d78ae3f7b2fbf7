"""`cosedge-isp`: look addresses up in the ISP tables, vet an origin, rebuild the tables, and
list ASNs the ASN map may be missing."""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

from edge.isp.index import ISPIndex, bundled_tables_dir
from edge.isp.table import TableError


def _tables(value: str | None) -> Path:
    return Path(value) if value else bundled_tables_dir()


def cmd_lookup(args: argparse.Namespace) -> int:
    """SPEC §6: `IP<TAB>isp[,isp...]` per address, `-` when none; exit 0."""
    index = ISPIndex.from_directory(_tables(args.tables))
    status = 0
    for address in args.addresses:
        try:
            isps = index.lookup(address)
        except ValueError:
            print(f"cosedge-isp: not an IP address: {address}", file=sys.stderr)
            status = 2
            continue
        print(f"{address}\t{','.join(sorted(isps)) or '-'}")
    return status


def cmd_check(args: argparse.Namespace) -> int:
    """Would the edge accept this origin? One line per address; exit 0 only if all pass."""
    from edge.config import OriginAddress
    from edge.isp.policy import OriginAddressPolicy

    try:
        origin = OriginAddress.parse(args.address)
    except ValueError as e:
        print(f"cosedge-isp: bad origin address: {e}", file=sys.stderr)
        return 2
    try:
        policy = OriginAddressPolicy(_tables(args.tables), args.extra_cidr)
    except ValueError as e:
        print(f"cosedge-isp: --extra-cidr: {e}", file=sys.stderr)
        return 2
    if origin.ip is not None:
        addresses = [str(origin.ip)]
    else:
        try:
            infos = socket.getaddrinfo(origin.host, origin.connect_port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            print(f"cosedge-isp: cannot resolve {origin.host}: {e.strerror}", file=sys.stderr)
            return 1
        addresses = list(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))
    refused = 0
    for address in addresses:
        verdict = policy.check(address)
        refused += not verdict.accepted
        isps = ",".join(sorted(verdict.isps)) or "-"
        word = "accept" if verdict.accepted else "refuse"
        print(f"{address}\t{isps}\t{word}\t{verdict.reason}")
    return 1 if refused else 0


def cmd_update(argv: list[str]) -> int:
    from edge.isp.update import main as update_main

    return update_main(argv)


def cmd_candidates(argv: list[str]) -> int:
    from edge.isp.candidates import main as candidates_main

    return candidates_main(argv)


def main(argv: list[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["update"]:
        return cmd_update(args_list[1:])
    if args_list[:1] == ["candidates"]:
        return cmd_candidates(args_list[1:])
    parser = argparse.ArgumentParser(
        prog="cosedge-isp",
        description="ISP address tables of cosedge: look up, vet an origin, rebuild.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    lookup = sub.add_parser("lookup", help="print the ISPs each IP belongs to")
    lookup.add_argument("addresses", nargs="+", metavar="IP")
    lookup.add_argument("--tables", metavar="DIR", help="table folder (default: bundled)")
    lookup.set_defaults(func=cmd_lookup)
    check = sub.add_parser("check", help="would the edge accept this origin (host[:port])?")
    check.add_argument("address", metavar="ADDRESS")
    check.add_argument("--tables", metavar="DIR", help="table folder (default: bundled)")
    check.add_argument(
        "--extra-cidr",
        action="append",
        default=[],
        metavar="CIDR",
        help="accept this CIDR too, like extra_origin_cidrs (repeatable)",
    )
    check.set_defaults(func=cmd_check)
    sub.add_parser("update", help="rebuild the tables (see `cosedge-isp update --help`)")
    sub.add_parser(
        "candidates",
        help="ASNs asns.yaml may be missing (see `cosedge-isp candidates --help`)",
    )
    args = parser.parse_args(args_list)
    try:
        return int(args.func(args))
    except TableError as e:
        print(f"cosedge-isp: bad table: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
