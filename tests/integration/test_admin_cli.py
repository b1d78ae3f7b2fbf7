"""`cosedge-admin origin show/set/delete` against a live edge, as an operator runs it."""

from __future__ import annotations

import pytest_twisted

from tests.integration.conftest import BUCKET, run_admin

SECRET_ID = "AKIDadmin"
SECRET_KEY = "admin-secret"


async def admin(port: int, *args: str, key: str = SECRET_KEY) -> tuple[str, str, int]:
    """The admin command against the edge on `port`, with this module's keys."""
    return await run_admin(port, SECRET_ID, key, *args)


@pytest_twisted.ensureDeferred
async def test_admin_sets_shows_and_deletes_origin(edges, origin):
    """set / show / delete through the real command: a prefix rule applies to its keys only
    and deleting it leaves misses without an origin."""
    edge = await edges.start(
        edges.config(None, credentials=[{"secret_id": SECRET_ID, "secret_key": SECRET_KEY}])
    )
    out, _, code = await admin(edge.port, "origin", "show", BUCKET)
    assert code == 0 and "no origin rules" in out
    out, err, code = await admin(
        edge.port, "origin", "set", BUCKET, origin.address, "--prefix", "img/"
    )
    assert code == 0, err
    out, _, code = await admin(edge.port, "origin", "show", BUCKET)
    assert code == 0
    assert f"1\timg/\t{origin.address}\tproxy (302 now, copy in the background), 302" in out
    assert (await edge.get("img/a.png")).status == 302
    assert (await edge.get("css/a.css")).status == 404
    out, _, code = await admin(edge.port, "origin", "delete", BUCKET)
    assert code == 0 and "deleted" in out
    assert (await edge.get("img/a.png")).status == 404


@pytest_twisted.ensureDeferred
async def test_admin_reports_refusals(edges):
    """A refused address and a wrong key exit 1 with COS's code and the reason."""
    edge = await edges.start(
        edges.config(
            None, extra=[], credentials=[{"secret_id": SECRET_ID, "secret_key": SECRET_KEY}]
        )
    )
    _, err, code = await admin(edge.port, "origin", "set", BUCKET, "192.168.1.10")
    assert code == 1
    assert "400 InvalidArgument" in err and "192.168.1.10: private address" in err
    _, err, code = await admin(edge.port, "origin", "show", BUCKET, key="wrong")
    assert code == 1 and "403 SignatureDoesNotMatch" in err


@pytest_twisted.ensureDeferred
async def test_admin_set_replaces_add_keeps_and_delete_restores_the_yaml_origin(edges, origin):
    """`set` says it replaced all rules; `set --add` keeps the rules in force (here the
    YAML shorthand) and appends one with the next priority; `delete` says the config
    file's origin applies again, and misses redirect to it once more."""
    edge = await edges.start(
        edges.config(
            origin.address, credentials=[{"secret_id": SECRET_ID, "secret_key": SECRET_KEY}]
        )
    )
    other = f"localhost:{origin.port}"
    out, err, code = await admin(edge.port, "origin", "set", BUCKET, other, "--add", "--redirect")
    assert code == 0, err
    assert "rule added with priority 2; 2 rule(s)" in out
    out, _, _ = await admin(edge.port, "origin", "show", BUCKET)
    assert f"1\t*\t{origin.address}\tproxy" in out and f"2\t*\t{other}\tredirect" in out
    out, err, code = await admin(edge.port, "origin", "set", BUCKET, other, "--redirect")
    assert code == 0 and "all origin rules replaced by 1 rule" in out, err
    miss = await edge.get("a.txt")
    assert miss.header("location") == f"http://{other}/a.txt"
    out, _, code = await admin(edge.port, "origin", "delete", BUCKET)
    assert code == 0 and "origin: applies again" in out
    miss = await edge.get("a.txt")
    assert miss.status == 302 and miss.header("location") == f"http://{origin.address}/a.txt"


@pytest_twisted.ensureDeferred
async def test_admin_sets_the_origin_modes(edges, origin):
    """`set` with --standby (twice), --https, --follow-redirects, --rewrite-prefix and
    --rewrite-suffix stores a rule with each mode: `show` lists them, `show --xml` has the
    COS elements, and a miss's Location is https:// with the rewritten path. A FROM=TO
    without `=` is a usage error (exit 2)."""
    edge = await edges.start(
        edges.config(None, credentials=[{"secret_id": SECRET_ID, "secret_key": SECRET_KEY}])
    )
    args = [
        "origin", "set", BUCKET, origin.address, "--standby", "202.96.128.86",
        "--standby", "standby.example.com:8443", "--https", "--follow-redirects",
        "--rewrite-prefix", "img/=static/", "--rewrite-suffix", ".jpg=.webp",
    ]  # fmt: skip
    out, err, code = await admin(edge.port, *args)
    assert code == 0, err
    out, _, code = await admin(edge.port, "origin", "show", BUCKET)
    assert code == 0
    assert (
        f"1\t*\t{origin.address}\tproxy (302 now, copy in the background), 302, query kept, "
        "HTTPS, standby 202.96.128.86, standby.example.com:8443 on 5xx, redirects followed, "
        "prefix 'img/' -> 'static/', suffix '.jpg' -> '.webp'"
    ) in out
    out, _, _ = await admin(edge.port, "origin", "show", BUCKET, "--xml")
    for element in (
        "<Protocol>HTTPS</Protocol>",
        "<FollowRedirection>true</FollowRedirection>",
        "<StandbyHostName_1>202.96.128.86</StandbyHostName_1>",
        "<StandbyHostName_2>standby.example.com:8443</StandbyHostName_2>",
        "<PrefixConfiguration><Prefix>img/</Prefix>"
        "<ReplacedWithPrefix>static/</ReplacedWithPrefix></PrefixConfiguration>",
        "<SuffixConfiguration><Suffix>.jpg</Suffix>"
        "<ReplacedWithSuffix>.webp</ReplacedWithSuffix></SuffixConfiguration>",
    ):
        assert element in out
    miss = await edge.get("img/cat.jpg")
    assert miss.header("location") == f"https://{origin.address}/static/cat.webp"
    _, err, code = await admin(edge.port, "origin", "set", BUCKET, "a.com", "--rewrite-prefix", "x")
    assert code == 2 and "--rewrite-prefix takes FROM=TO" in err
