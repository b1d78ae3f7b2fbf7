"""`cosedge-admin`: show, set and delete a bucket's origin rules without the COS SDK.

It speaks the same signed API as the SDKs (SPEC §7), with the key pair from the environment
(`COSEDGE_SECRET_ID`, `COSEDGE_SECRET_KEY`) so secrets stay out of shell history, and the
edge's address from `--endpoint` or `COSEDGE_ENDPOINT`.

    cosedge-admin origin show BUCKET
    cosedge-admin origin set BUCKET HOST[:PORT] [--prefix P] [--redirect | --mirror]
        [--code 302] [--standby HOST[:PORT]]... [--https] [--follow-redirects]
        [--rewrite-prefix A=B] [--rewrite-suffix A=B]
    cosedge-admin origin set BUCKET HOST[:PORT] --add [--priority N] ...
    cosedge-admin origin set BUCKET --xml FILE
    cosedge-admin origin delete BUCKET
    cosedge-admin origin check BUCKET HOST[:PORT] [--key K] [--json]
    cosedge-admin copy status BUCKET KEY [--json]
    cosedge-admin copies BUCKET [--failed] [--json]
    cosedge-admin refresh BUCKET (KEY... | --prefix P) [--delete-missing] [--json]
    cosedge-admin backfill start|status|cancel|list BUCKET ...   (see edge.admin.backfill)

`set` replaces all of a bucket's rules (as COS's PutBucketOrigin does) unless `--add` asks
to keep the rules in force and add one; `delete` removes the rules set through the API, so
the config file's `origin:` (if the bucket has one) applies again. `check` is a dry run:
it shows what the edge makes of an address (each resolved address's ISP verdict, a loop
back into the edge) and, with `--key`, what the origin answers to a HEAD of that key; it
saves nothing and exits 0 when the rule would be accepted, 1 when refused, 2 on usage
errors. `copy status` and `copies` show what became of the copies from origins
(`edge.admin.copies`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import replace

from edge.admin import backfill, copies, refresh

# Re-exported: where commands and tests have always found the signed client.
from edge.admin.client import AdminError as AdminError
from edge.admin.client import Reply as Reply
from edge.admin.client import call as call
from edge.admin.client import error_text as _error_text
from edge.api.rules import MAX_STANDBYS, MIRROR, PROXY, REDIRECT, OriginRule, Rewrite, RuleError
from edge.api.rules_xml import parse_origin_xml, render_origin_xml
from edge.config import OriginAddress

DEFAULT_ENDPOINT = "http://127.0.0.1:8080"


def describe(rule: OriginRule) -> str:
    what = "proxy (302 now, copy in the background)" if rule.origin_type == PROXY else "redirect"
    query = "query kept" if rule.follow_query_string else "query dropped"
    prefix = rule.prefix or "*"
    modes = [f"{rule.redirect_code}", query]
    if rule.origin_type == MIRROR:  # no redirect: neither a code nor a Location query
        what, modes = "mirror (served while stored)", []
    if rule.protocol != "HTTP":
        modes.append(rule.protocol)
    if rule.standbys:
        codes = ",".join(rule.standby_codes) or "5xx"
        modes.append(f"standby {', '.join(s.netloc for s in rule.standbys)} on {codes}")
    if rule.follow_redirects:
        modes.append("redirects followed")
    for part, rewrite in (("prefix", rule.prefix_rewrite), ("suffix", rule.suffix_rewrite)):
        if rewrite is not None:
            modes.append(f"{part} {rewrite.match!r} -> {rewrite.replacement!r}")
    return "\t".join((str(rule.priority), prefix, rule.origin.netloc, ", ".join([what, *modes])))


def _rewrite(text: str | None, flag: str) -> Rewrite | None:
    """`A=B` of --rewrite-prefix/--rewrite-suffix: A in the key becomes B at the origin."""
    if text is None:
        return None
    match, sep, replacement = text.partition("=")
    if not sep:
        raise AdminError(f"{flag} takes FROM=TO, not {text!r}")
    return Rewrite(match, replacement)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cosedge-admin",
        description="Manage a cosedge bucket's origin rules through the signed API. Keys come "
        "from COSEDGE_SECRET_ID and COSEDGE_SECRET_KEY.",
    )
    parser.add_argument(
        "--endpoint",
        default=os.environ.get("COSEDGE_ENDPOINT", DEFAULT_ENDPOINT),
        help=f"the edge (default: $COSEDGE_ENDPOINT or {DEFAULT_ENDPOINT})",
    )
    sub = parser.add_subparsers(dest="area", required=True)
    origin = sub.add_parser("origin", help="a bucket's back-to-origin rules")
    actions = origin.add_subparsers(dest="action", required=True)
    show = actions.add_parser("show", help="print the rules: priority, prefix, host, behaviour")
    show.add_argument("bucket")
    show.add_argument("--xml", action="store_true", help="print the OriginConfiguration XML")
    set_ = actions.add_parser(
        "set",
        help="replace ALL of the bucket's rules with one rule (or an XML file); "
        "--add keeps them and adds one",
    )
    set_.add_argument("bucket")
    set_.add_argument("host", nargs="?", help="origin host or IP, optional :port")
    set_.add_argument("--prefix", default="", help="only keys starting with this")
    kind = set_.add_mutually_exclusive_group()
    kind.add_argument("--redirect", action="store_true", help="redirect only, copy nothing")
    kind.add_argument(
        "--mirror",
        action="store_true",
        help="serve a miss with the origin's bytes while storing them (no redirect)",
    )
    set_.add_argument("--code", type=int, default=302, choices=(301, 302, 307))
    set_.add_argument("--drop-query", action="store_true", help="do not repeat the query")
    set_.add_argument(
        "--standby",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help=f"a standby origin a failed copy moves to (repeatable, up to {MAX_STANDBYS})",
    )
    set_.add_argument("--https", action="store_true", help="the origin speaks HTTPS")
    set_.add_argument(
        "--follow-redirects",
        action="store_true",
        help="follow up to 3 origin redirects for the copy (each hop vetted)",
    )
    set_.add_argument(
        "--rewrite-prefix", metavar="FROM=TO", help="ask the origin for TO... instead of FROM..."
    )
    set_.add_argument(
        "--rewrite-suffix", metavar="FROM=TO", help="ask the origin for ...TO instead of ...FROM"
    )
    set_.add_argument("--xml", metavar="FILE", help="an OriginConfiguration XML file")
    set_.add_argument("--add", action="store_true", help="keep the rules in force and add this one")
    set_.add_argument(
        "--priority", type=int, help="the rule's priority (default: 1, or last with --add)"
    )
    delete = actions.add_parser(
        "delete",
        help="remove the rules set through the API; the config file's origin: applies again",
    )
    delete.add_argument("bucket")
    check = actions.add_parser(
        "check",
        help="dry run: resolve and judge an origin address, optionally HEAD one key; "
        "saves nothing (exit 0 accepted, 1 refused, 2 usage error)",
    )
    check.add_argument("bucket")
    check.add_argument("address", help="origin host or IP, optional :port")
    check.add_argument("--key", help="probe this key with a HEAD through the vetted address")
    check.add_argument("--json", action="store_true", help="print the edge's JSON answer")
    copies.add_parsers(sub)
    refresh.add_parser(sub)  # hook: the refresh command
    backfill.add_parser(sub)
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))

    secret_id = os.environ.get("COSEDGE_SECRET_ID", "")
    secret_key = os.environ.get("COSEDGE_SECRET_KEY", "")
    if not secret_id or not secret_key:
        print("cosedge-admin: set COSEDGE_SECRET_ID and COSEDGE_SECRET_KEY", file=sys.stderr)
        return 2
    try:
        if args.area == "backfill":
            return backfill.run(args, _bucket_api(args, secret_id, secret_key))
        return _run(args, secret_id, secret_key)
    except backfill.BackfillError as e:
        print(f"cosedge-admin: {e}", file=sys.stderr)
        return e.code
    except (AdminError, RuleError, OSError, copies.NotStatusJSON) as e:
        print(f"cosedge-admin: {e}", file=sys.stderr)
        return 2


def _bucket_api(args: argparse.Namespace, secret_id: str, secret_key: str) -> backfill.Api:
    """Signed calls to `args.bucket`, as the backfill commands make them."""

    def api(method: str, params: dict[str, str], body: bytes) -> tuple[int, bytes]:
        content_type = "text/plain; charset=utf-8" if body else None
        reply = call(
            args.endpoint, secret_id, secret_key, method, args.bucket, params, body, content_type
        )
        return reply.status, reply.body

    return api


def _run(args: argparse.Namespace, secret_id: str, secret_key: str) -> int:
    def api(method: str, body: bytes = b"", content_type: str | None = None) -> Reply:
        return call(
            args.endpoint,
            secret_id,
            secret_key,
            method,
            args.bucket,
            {"origin": ""},
            body,
            content_type,
        )

    if args.area in ("copy", "copies"):

        def get(bucket: str, params: dict[str, str], key: str) -> Reply:
            return call(args.endpoint, secret_id, secret_key, "GET", bucket, params, key=key)

        return copies.run(args, get, _error_text)
    if args.area == "refresh":  # hook: the refresh command
        return refresh.run(args, secret_id, secret_key)
    if args.action == "check":
        return _check(args, secret_id, secret_key)
    if args.action == "show":
        reply = api("GET")
        if reply.status == 404 and b"NoSuchOriginConfiguration" in reply.body:
            print(f"{args.bucket}: no origin rules (misses answer 404)")
            return 0
        if reply.status != 200:
            print(f"cosedge-admin: {_error_text(reply)}", file=sys.stderr)
            return 1
        if args.xml:
            sys.stdout.write(reply.body.decode() + "\n")
            return 0
        print("priority\tprefix\thost\tbehaviour")
        for rule in parse_origin_xml(reply.body):
            print(describe(rule))
        return 0
    if args.action == "set":
        if args.xml:
            with open(args.xml, "rb") as f:
                body = f.read()
            parse_origin_xml(body)  # refuse a bad file here, with the element named
        elif args.host:
            try:
                origin = OriginAddress.parse(args.host)
                standbys = tuple(OriginAddress.parse(s) for s in args.standby)
            except ValueError as e:
                raise AdminError(str(e)) from None
            if len(standbys) > MAX_STANDBYS:
                raise AdminError(f"at most {MAX_STANDBYS} --standby origins")
            rule = OriginRule(
                priority=args.priority or 1,
                origin_type=REDIRECT if args.redirect else MIRROR if args.mirror else PROXY,
                origin=origin,
                prefix=args.prefix,
                follow_query_string=not args.drop_query,
                redirect_code=args.code,
                protocol="HTTPS" if args.https else "HTTP",
                standbys=standbys,
                follow_redirects=args.follow_redirects,
                prefix_rewrite=_rewrite(args.rewrite_prefix, "--rewrite-prefix"),
                suffix_rewrite=_rewrite(args.rewrite_suffix, "--rewrite-suffix"),
            )
            existing: list[OriginRule] = []
            if args.add:
                reply = api("GET")
                if reply.status == 200:
                    existing = parse_origin_xml(reply.body)
                elif not (reply.status == 404 and b"NoSuchOriginConfiguration" in reply.body):
                    print(f"cosedge-admin: {_error_text(reply)}", file=sys.stderr)
                    return 1
            priority = args.priority
            if priority is None:
                priority = max((r.priority for r in existing), default=0) + 1
            rule = replace(rule, priority=priority)
            rules = [*existing, rule]
            body = render_origin_xml(rules)
        else:
            raise AdminError("origin set needs HOST or --xml FILE")
        if args.add and args.xml:
            raise AdminError("--add takes HOST, not --xml")
        reply = api("PUT", body, "application/xml")
        if reply.status != 200:
            print(f"cosedge-admin: {_error_text(reply)}", file=sys.stderr)
            return 1
        if args.xml:
            print(f"{args.bucket}: origin rules replaced by {args.xml}")
        elif args.add:
            print(f"{args.bucket}: rule added with priority {priority}; {len(rules)} rule(s)")
        else:
            print(f"{args.bucket}: all origin rules replaced by 1 rule")
        return 0
    reply = api("DELETE")
    if reply.status not in (200, 204):
        print(f"cosedge-admin: {_error_text(reply)}", file=sys.stderr)
        return 1
    print(
        f"{args.bucket}: origin rules set through the API deleted; "
        "the config file's origin: applies again if the bucket has one"
    )
    return 0


def _check(args: argparse.Namespace, secret_id: str, secret_key: str) -> int:
    """`origin check`: the edge's dry-run verdict, printed; 0 accepted, 1 refused."""
    try:
        OriginAddress.parse(args.address)
    except ValueError as e:
        raise AdminError(f"address: {e}") from None
    params = {"cosedge-origin-check": "", "address": args.address}
    if args.key is not None:
        params["key"] = args.key
    reply = call(args.endpoint, secret_id, secret_key, "GET", args.bucket, params)
    if reply.status != 200:
        raise AdminError(_error_text(reply))
    try:
        answer = json.loads(reply.body)
        accepted = answer["accepted"] is True
    except (ValueError, KeyError, TypeError):
        raise AdminError("the edge's answer is not the check's JSON") from None
    if args.json:
        sys.stdout.write(json.dumps(answer, indent=2) + "\n")
        return 0 if accepted else 1
    verdict = "accepted" if accepted else f"refused: {answer.get('reason')}"
    print(f"{args.bucket}: origin {answer.get('address')} would be {verdict}")
    if answer.get("addresses"):
        print("address\tverdict\tisps\treason")
    for item in answer.get("addresses", []):
        isps = ",".join(item.get("isps", [])) or "-"
        state = "accepted" if item.get("accepted") else "refused"
        print(f"{item.get('address')}\t{state}\t{isps}\t{item.get('reason')}")
    probe = answer.get("probe")
    if probe:
        where = f"HEAD /{probe['key']} via {probe['address']}"
        if probe.get("error"):
            print(f"{where}: no answer ({probe['error']})")
        else:
            size = "" if probe.get("length") is None else f", {probe['length']} bytes"
            etag = "" if not probe.get("etag") else f", ETag {probe['etag']}"
            print(f"{where}: {probe['status']}{size}{etag}")
    elif args.key is not None and not accepted:
        print(f"HEAD /{args.key}: not sent (the address is refused)")
    return 0 if accepted else 1


if __name__ == "__main__":
    raise SystemExit(main())
