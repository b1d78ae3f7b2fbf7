"""Backfill jobs against real loopback origins (SPEC §12): `cosedge-admin backfill` hands
the edge keys (from a file or a sitemap), the edge copies them through its copier, skips
what it has, survives a restart without fetching a stored key twice, can be cancelled, and
leaves live misses half the copy slots."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from edge.admin.cli import call
from edge.api.rules import MIRROR, REDIRECT, OriginRule, OriginRules
from edge.config import OriginAddress
from edge.testing.process import OutputDrain, start_twistd, wait_ready
from tests.integration.conftest import BUCKET, reactor, wait_until
from tests.integration.test_admin_cli import SECRET_ID, SECRET_KEY, admin

CREDENTIALS = [{"secret_id": SECRET_ID, "secret_key": SECRET_KEY}]
JOB_FIELDS = ["job", "state", "total", "done", "stored", "skipped", "failed", "bytes", "failures"]


async def job_status(port: int, job: str) -> dict[str, Any]:
    """The job as the API shows it (signed GET, off the reactor)."""
    reply = await deferToThread(
        call,
        f"http://127.0.0.1:{port}",
        SECRET_ID,
        SECRET_KEY,
        "GET",
        BUCKET,
        {"cosedge-backfill": "", "job": job},
    )
    assert reply.status == 200, reply.body
    answer: dict[str, Any] = json.loads(reply.body)
    return answer


async def start_job(port: int, tmp_path: Path, keys: list[str], *options: str) -> str:
    """`backfill start --keys FILE --json`; the new job's id."""
    keys_file = tmp_path / f"keys-{len(os.listdir(tmp_path))}.txt"
    keys_file.write_text("# a comment line\n" + "".join(f"{k}\n" for k in keys))
    out, err, code = await admin(
        port, "backfill", "start", BUCKET, "--keys", str(keys_file), "--json", *options
    )
    assert code == 0, err
    return str(json.loads(out)["job"])


async def finished(port: int, job: str, timeout: float = 30.0) -> dict[str, Any]:
    """Poll the job until it has ended; its last status."""
    waited = 0.0
    while (status := await job_status(port, job))["state"] == "running":
        assert waited < timeout, status
        await deferLater(reactor, 0.2, lambda: None)
        waited += 0.2
    return status


@pytest_twisted.ensureDeferred
async def test_a_job_skips_present_keys_and_reports_failures(edges, origin, tmp_path):
    """Keys the bucket has are skipped without an origin request; the others are stored;
    a key the origin lacks ends the job completed-with-failures, naming it and why."""
    for i in range(5):
        origin.serve(f"/k{i}.txt", b"x" * (i + 1))
    edge = await edges.start(edges.config(origin.address, credentials=CREDENTIALS))
    (edge.data_dir / BUCKET / "k0.txt").write_bytes(b"mine")
    (edge.data_dir / BUCKET / "k1.txt").write_bytes(b"mine")
    keys = [f"k{i}.txt" for i in range(5)] + ["missing.txt"]
    job = await start_job(edge.port, tmp_path, keys)
    status = await finished(edge.port, job)
    assert status["state"] == "completed-with-failures"
    assert (status["total"], status["done"], status["stored"], status["skipped"]) == (6, 6, 3, 2)
    assert status["failed"] == 1 and status["bytes"] == 3 + 4 + 5
    assert status["failures"] == [{"key": "missing.txt", "reason": "origin answered 404"}]
    assert not origin.requests_for("/k0.txt") and not origin.requests_for("/k1.txt")
    assert (edge.data_dir / BUCKET / "k0.txt").read_bytes() == b"mine"
    assert (edge.data_dir / BUCKET / "k4.txt").read_bytes() == b"xxxxx"


def edge_config(path: Path, data_dir: Path, origin: str, workers: int) -> Path:
    path.write_text(
        "listen: 'tcp:0:interface=127.0.0.1'\n"
        f"data_dir: {data_dir}\n"
        f"workers: {workers}\n"
        "extra_origin_cidrs: ['127.0.0.1/32']\n"
        f"credentials: [{{secret_id: {SECRET_ID}, secret_key: {SECRET_KEY}}}]\n"
        f"buckets:\n  {BUCKET}:\n    origin: {{address: '{origin}'}}\n"
    )
    return path


async def start_edge(config: Path, cwd: Path) -> tuple[subprocess.Popen[bytes], int, OutputDrain]:
    proc = start_twistd("--config", str(config), cwd=cwd)
    port, output = await deferToThread(wait_ready, proc)  # blocking: off the reactor
    return proc, port, output


@pytest_twisted.ensureDeferred
async def test_a_40_key_job_survives_a_restart_and_fetches_each_key_once(origin, tmp_path):
    """A real `twistd` edge (two processes: the API call may land in either, the main one
    runs the job) starts 40 keys at 10 keys/s, 2 of them missing at the origin; it is
    stopped mid-job and started again. The job resumes from its checkpoint under
    `.cosedge/jobs/`, ends completed-with-failures listing the 2, and the origin saw
    exactly one GET per key. `status --wait` prints real progress lines, then the summary."""
    missing = {"k07.bin", "k31.bin"}
    keys = [f"k{i:02d}.bin" for i in range(40)]
    for key in keys:
        if key not in missing:
            origin.serve(f"/{key}", key.encode() * 100)
    data_dir = tmp_path / "data"
    config = edge_config(tmp_path / "edge.yaml", data_dir, origin.address, workers=2)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        proc, port, _ = await start_edge(config, tmp_path)
        procs.append(proc)
        job = await start_job(port, tmp_path, keys, "--rate", "10")
        await wait_until(lambda: len(origin.requests) >= 12, timeout=30)
        proc.send_signal(signal.SIGTERM)
        # A clean shutdown (recent Twisted re-raises the SIGTERM after it: status -15).
        assert await deferToThread(proc.wait, 30) in (0, -signal.SIGTERM)
        interrupted = len(origin.requests)
        assert interrupted < 40  # it really was mid-job
        checkpoint = json.loads((data_dir / ".cosedge" / "jobs" / f"{job}.checkpoint").read_text())
        assert checkpoint["state"] == "running" and 0 < checkpoint["done"] < 40
        proc, port, _ = await start_edge(config, tmp_path)
        procs.append(proc)
        out, err, code = await admin(
            port, "backfill", "status", BUCKET, job, "--wait", "--interval", "0.5"
        )
        assert code == 1, err  # completed with failures
        lines = out.splitlines()
        assert lines[0].startswith(f"{job} running ") and "keys/s" in lines[0]
        assert f"backfill {job} of {BUCKET} completed with failures: 40/40 done" in out
        assert "failed keys:" in out and "k07.bin\torigin answered 404" in out
        out, _, code = await admin(port, "backfill", "status", BUCKET, "--json")
        status = json.loads(out)
        assert list(status) == JOB_FIELDS
        assert status["state"] == "completed-with-failures"
        assert (status["total"], status["done"], status["failed"]) == (40, 40, 2)
        assert status["stored"] + status["skipped"] == 38
        assert sorted(f["key"] for f in status["failures"]) == sorted(missing)
        for key in keys:
            assert len(origin.requests_for(f"/{key}")) == 1, key
            if key not in missing:
                assert (data_dir / BUCKET / key).read_bytes() == key.encode() * 100
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                await deferToThread(proc.wait, 30)


@pytest_twisted.ensureDeferred
async def test_a_cancelled_job_starts_no_more_copies(edges, origin, tmp_path):
    """`backfill cancel` (the bucket's latest job): no key starts after it, the job ends
    `cancelled` with what it did so far, and stays so; at 4 keys/s it had not finished."""
    keys = [f"c{i}" for i in range(20)]
    for key in keys:
        origin.serve(f"/{key}", b"body")
    edge = await edges.start(edges.config(origin.address, credentials=CREDENTIALS))
    job = await start_job(edge.port, tmp_path, keys, "--rate", "4")
    await wait_until(lambda: len(origin.requests) >= 2)
    out, err, code = await admin(edge.port, "backfill", "cancel", BUCKET)
    assert code == 0, err
    assert f"backfill job {job} cancelled at " in out
    asked = len(origin.requests)
    await deferLater(reactor, 1.0, lambda: None)
    assert len(origin.requests) <= asked + 1  # at most the copy that was starting
    status = await job_status(edge.port, job)
    assert status["state"] == "cancelled" and status["done"] < 20
    runner = edge.service.getServiceNamed("backfill")
    await wait_until(lambda: job not in runner.runs)
    assert (await job_status(edge.port, job))["state"] == "cancelled"


@pytest_twisted.ensureDeferred
async def test_a_job_holds_at_most_half_the_slots_and_misses_still_copy(edges, origin, tmp_path):
    """With concurrency 4 a job runs at most 2 copies at once, even with slow origin
    answers and no rate; live misses meanwhile start their copies at once and are stored
    while the job's keys are still waiting for the origin."""
    for i in range(6):
        origin.serve(f"/slow{i}", b"slow", headers_delay=1.5)
    origin.serve("/live0", b"live", headers_delay=0.5)  # in flight while the test looks
    origin.serve("/live1", b"live", headers_delay=0.5)
    fetch = {"concurrency": 4, "per_origin_concurrency": 4}
    edge = await edges.start(edges.config(origin.address, credentials=CREDENTIALS, fetch=fetch))
    job = await start_job(edge.port, tmp_path, [f"slow{i}" for i in range(6)])
    copies = edge.copier.job_copies
    seen: list[int] = []
    await wait_until(lambda: seen.append(copies.running) or copies.running == 2)
    for key in ("live0", "live1"):
        assert (await edge.get(key)).status == 302
    assert len(edge.copier.in_flight()) == 4  # the two misses' copies started at once
    bucket = edge.data_dir / BUCKET
    await wait_until(lambda: (bucket / "live0").exists() and (bucket / "live1").exists())
    assert (await job_status(edge.port, job))["done"] < 6
    await wait_until(lambda: seen.append(copies.running) or (bucket / "slow5").exists())
    status = await finished(edge.port, job)
    assert status["state"] == "completed" and status["stored"] == 6
    assert max(seen) == 2


@pytest_twisted.ensureDeferred
async def test_a_sitemap_index_with_a_gzipped_sitemap_gives_the_keys(edges, origin, tmp_path):
    """`--sitemap URL` of an index: the command fetches the index and the sitemaps it
    names (one gzipped, found by its magic bytes; one by a relative URL), turns page URLs
    into keys (percent-decoded, no leading /) and the edge copies them."""
    site = "http://www.example.com"
    plain = (
        '<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
        f"<url><loc>{site}/docs/a%20b.txt</loc></url><url><loc>{site}/</loc></url></urlset>"
    )
    zipped = gzip.compress(
        b'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
        b"<url><loc>http://www.example.com/img/c.png?v=2</loc></url></urlset>"
    )
    index = (
        '<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
        "<sitemap><loc>maps/plain.xml</loc></sitemap>"
        f"<sitemap><loc>http://{origin.address}/maps/zipped.xml</loc></sitemap></sitemapindex>"
    )
    origin.serve("/sitemap.xml", index.encode())
    origin.serve("/maps/plain.xml", plain.encode())
    origin.serve("/maps/zipped.xml", zipped)
    origin.serve("/docs/a%20b.txt", b"a b")
    origin.serve("/img/c.png", b"png")
    edge = await edges.start(edges.config(origin.address, credentials=CREDENTIALS))
    out, err, code = await admin(
        edge.port,
        "backfill",
        "start",
        BUCKET,
        "--sitemap",
        f"http://{origin.address}/sitemap.xml",
        "--wait",
        "--interval",
        "0.3",
    )
    assert code == 0, err
    assert "1 URL(s) name no key" in err  # the site root
    assert "completed: 2/2 done: 2 stored, 0 skipped, 0 failed" in out
    assert (edge.data_dir / BUCKET / "docs" / "a b.txt").read_bytes() == b"a b"
    assert (edge.data_dir / BUCKET / "img" / "c.png").read_bytes() == b"png"


@pytest_twisted.ensureDeferred
async def test_the_api_refuses_bad_jobs_with_cos_errors(edges, origin):
    """A key no store could hold (naming its line), a rate that is not a number, an empty
    list, a job that does not exist: each a COS XML error, and no job is written."""
    edge = await edges.start(edges.config(origin.address, credentials=CREDENTIALS))

    async def api(method: str, params: dict[str, str], body: bytes = b"") -> Any:
        return await deferToThread(
            call,
            f"http://127.0.0.1:{edge.port}",
            SECRET_ID,
            SECRET_KEY,
            method,
            BUCKET,
            {"cosedge-backfill": "", **params},
            body,
            "text/plain" if body else None,
        )

    reply = await api("POST", {}, b"ok.txt\na/../b\n")
    assert reply.status == 400 and b"<Code>InvalidArgument</Code>" in reply.body
    assert b"line 2: key has a" in reply.body
    reply = await api("POST", {"rate": "fast"}, b"ok.txt\n")
    assert reply.status == 400 and b"rate must be a number" in reply.body
    reply = await api("POST", {}, b"\n\n")
    assert reply.status == 400 and b"lists no keys" in reply.body
    reply = await api("GET", {"job": "20260101-000000-abcdef"})
    assert reply.status == 404 and b"<Code>NoSuchBackfillJob</Code>" in reply.body
    reply = await api("GET", {})
    assert reply.status == 200 and json.loads(reply.body) == {"jobs": []}
    assert not (edge.data_dir / ".cosedge" / "jobs").exists()


@pytest_twisted.ensureDeferred
async def test_a_job_joins_a_misss_copy_of_the_same_key(edges, origin, tmp_path):
    """Single flight with misses: a job reaching a key whose miss copy is running waits for
    that copy instead of starting another; the origin sees one GET, the job counts the
    key stored with its bytes."""
    origin.serve("/shared.bin", b"s" * 1000, headers_delay=3.0)
    edge = await edges.start(edges.config(origin.address, credentials=CREDENTIALS))
    assert (await edge.get("shared.bin")).status == 302
    reply = await deferToThread(
        call,
        f"http://127.0.0.1:{edge.port}",
        SECRET_ID,
        SECRET_KEY,
        "POST",
        BUCKET,
        {"cosedge-backfill": ""},
        b"shared.bin\n",
        "text/plain",
    )
    job = json.loads(reply.body)["job"]
    await wait_until(lambda: edge.copier.job_copies.running == 1)
    assert not (edge.data_dir / BUCKET / "shared.bin").exists()  # the miss's copy still runs
    status = await finished(edge.port, job)
    assert (status["state"], status["stored"], status["bytes"]) == ("completed", 1, 1000)
    assert len(origin.requests_for("/shared.bin")) == 1


@pytest_twisted.ensureDeferred
async def test_failed_retries_the_recorded_copy_failures(edges, origin):
    """`--failed`: the keys whose miss copies failed (two 404s, one 503, as the copy
    records list them) become a job once the origin has them; the job does not wait out
    their backoff or not_found_ttl (the operator asked), stores all three, and the
    records then list no failure. A bucket with none says so, exit 1."""
    keys = ["f/a.txt", "f/b.txt", "f/c.txt"]
    origin.serve("/f/c.txt", b"busy", status=503)
    fetch = {"not_found_ttl": 600, "retry_after": 600}
    edge = await edges.start(edges.config(origin.address, credentials=CREDENTIALS, fetch=fetch))
    for key in keys:
        assert (await edge.get(key)).status == 302
    await edge.copies_done()
    for key in keys:
        origin.serve(f"/{key}", key.encode())
    out, err, code = await admin(
        edge.port, "backfill", "start", BUCKET, "--failed", "--wait", "--interval", "0.3"
    )
    assert code == 0, err
    assert "completed: 3/3 done: 3 stored, 0 skipped, 0 failed" in out
    for key in keys:
        assert (edge.data_dir / BUCKET / key).read_bytes() == key.encode()
        assert len(origin.requests_for(f"/{key}")) == 2  # the miss's copy, the job's
    _, err, code = await admin(edge.port, "backfill", "start", BUCKET, "--failed")
    assert code == 1 and "no recorded copy failures" in err


@pytest_twisted.ensureDeferred
async def test_mirror_rules_are_backfilled_and_redirect_rules_are_not(edges, origin, tmp_path):
    """A Mirror rule stores what it pulls, so its keys are copied like a Proxy rule's; a
    key under a Redirect rule fails with that reason and the origin is not asked."""
    origin.serve("/m/a.txt", b"mirrored")
    origin.serve("/r/b.txt", b"redirected")
    config = edges.config(origin.address, credentials=CREDENTIALS)
    address = OriginAddress.parse(origin.address)
    rules = (OriginRule(1, MIRROR, address, prefix="m/"), OriginRule(2, REDIRECT, address))
    folder = Path(config.data_dir) / ".cosedge" / "origin"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{BUCKET}.json").write_bytes(OriginRules.record(BUCKET, rules))
    edge = await edges.start(config)
    job = await start_job(edge.port, tmp_path, ["m/a.txt", "r/b.txt"])
    status = await finished(edge.port, job)
    assert (status["stored"], status["failed"]) == (1, 1)
    assert status["failures"] == [
        {"key": "r/b.txt", "reason": "the key's origin rule only redirects (no copy)"}
    ]
    assert (edge.data_dir / BUCKET / "m" / "a.txt").read_bytes() == b"mirrored"
    assert not origin.requests_for("/r/b.txt")
