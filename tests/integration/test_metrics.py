"""Metrics and the admin port against a real `twistd` edge (SPEC §9): exact counts of the
requests made, sums over worker processes, the admin port's routes, and the public port
that serves neither `/metrics` nor `/console/`."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge.api.signature import sign
from edge.testing.process import OutputDrain, raw_request, start_twistd, static_origin, wait_ready

BUCKET = "metered-1250000000"
DEAD = "deadorigin-1250000000"  # its origin is a loopback port nobody listens on
PLAIN = "plain-1250000000"  # no origin
SECRET_ID, SECRET_KEY = "AKIDmetrics", "metrics-secret"
ADMIN_READY = re.compile(r"cosedge admin port ready: listening on 127\.0\.0\.1:(\d+)")


@dataclass
class Edge:
    port: int
    admin: int
    data: Path
    origin: Path
    output: OutputDrain
    process: subprocess.Popen[bytes]


def _wait_admin(output: OutputDrain, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = ADMIN_READY.search(output.text())
        if match:
            return int(match.group(1))
        time.sleep(0.05)
    raise AssertionError(f"no admin port readiness line:\n{output.text()}")


@contextlib.contextmanager
def running_edge(root: Path, workers: int = 1) -> Iterator[Edge]:
    """A real edge with an admin port on port 0, three buckets and a static origin."""
    origin = root / "origin"
    origin.mkdir()
    data = root / "data"
    for name in (BUCKET, DEAD, PLAIN):
        (data / name).mkdir(parents=True)
    with static_origin(origin) as origin_port:
        config = root / "edge.yaml"
        config.write_text(
            "listen: 'tcp:0:interface=127.0.0.1'\n"
            "admin_listen: 'tcp:0:interface=127.0.0.1'\n"
            f"data_dir: {data}\n"
            f"workers: {workers}\n"
            "access_log: null\n"
            "extra_origin_cidrs: ['127.0.0.1/32']\n"
            f"credentials: [{{secret_id: {SECRET_ID}, secret_key: {SECRET_KEY}}}]\n"
            "buckets:\n"
            f"  {BUCKET}:\n    origin: {{address: '127.0.0.1:{origin_port}'}}\n"
            f"  {DEAD}:\n    origin: {{address: '127.0.0.1:9'}}\n"
            f"  {PLAIN}: {{}}\n"
        )
        proc = start_twistd("--config", str(config), cwd=root)
        try:
            port, output = wait_ready(proc)
            admin = _wait_admin(output)
            if workers > 1:
                deadline = time.monotonic() + 30
                while output.text().count("cosedge worker") < workers - 1:
                    assert time.monotonic() < deadline, output.text()
                    time.sleep(0.05)
            yield Edge(port, admin, data, origin, output, proc)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    return raw_request(port, "GET", path, {"Host": f"127.0.0.1:{port}", **(headers or {})})


def signed_get(port: int, path: str) -> tuple[int, dict, bytes]:
    host = f"127.0.0.1:{port}"
    auth = sign(SECRET_ID, SECRET_KEY, "GET", path, {}, {"host": host}, expires=300)
    return raw_request(port, "GET", path, {"Host": host, "Authorization": auth})


def scrape(edge: Edge) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the admin port's /metrics, by name and labels."""
    status, headers, body = get(edge.admin, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for(predicate, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_counts_match_the_requests_made(tmp_path: Path) -> None:
    """Hits, bytes, redirects, not_found, errors, copies stored and failed (with their
    reason class), bytes copied and origin answers are exactly what the requests caused."""
    with running_edge(tmp_path) as edge:
        (edge.data / BUCKET / "hit.txt").write_bytes(b"0123456789")
        (edge.origin / "copied.bin").write_bytes(b"x" * 1234)
        for _ in range(3):
            assert get(edge.port, f"/{BUCKET}/hit.txt")[0] == 200
        ranged = get(edge.port, f"/{BUCKET}/hit.txt", {"Range": "bytes=0-3"})
        assert ranged[0] == 206
        assert get(edge.port, f"/{BUCKET}/copied.bin")[0] == 302
        wait_for(lambda: (edge.data / BUCKET / "copied.bin").exists())
        assert get(edge.port, f"/{BUCKET}/absent.bin")[0] == 302  # the origin has none
        assert get(edge.port, f"/{DEAD}/k")[0] == 302  # nothing listens at its origin
        assert get(edge.port, f"/{PLAIN}/k")[0] == 404
        assert get(edge.port, "/nosuch-1250000000/k")[0] == 404
        assert get(edge.port, f"/{BUCKET}/hit.txt", {"Range": "bytes=50-60"})[0] == 416

        def copies_settled() -> bool:
            s = scrape(edge)
            return value(s, "cosedge_copy_duration_seconds_count") == 3

        wait_for(copies_settled)
        s = scrape(edge)
        req = "cosedge_requests_total"
        assert value(s, req, bucket=BUCKET, outcome="hit") == 4
        assert value(s, req, bucket=BUCKET, outcome="redirect") == 2
        assert value(s, req, bucket=BUCKET, outcome="error") == 1
        assert value(s, req, bucket=DEAD, outcome="redirect") == 1
        assert value(s, req, bucket=PLAIN, outcome="not_found") == 1
        assert value(s, req, bucket="_unknown", outcome="not_found") == 1
        assert value(s, "cosedge_response_bytes_total", bucket=BUCKET) >= 3 * 10 + 4
        copies = "cosedge_copies_total"
        assert value(s, copies, bucket=BUCKET, outcome="stored", reason="none") == 1
        assert value(s, copies, bucket=BUCKET, outcome="failed", reason="status_404") == 1
        assert value(s, copies, bucket=DEAD, outcome="failed", reason="connect") == 1
        assert value(s, "cosedge_copied_bytes_total", bucket=BUCKET) == 1234
        origin = "cosedge_origin_responses_total"
        assert value(s, origin, status_class="2xx") == 1
        assert value(s, origin, status_class="4xx") == 1
        assert value(s, origin, status_class="error") == 1
        wait_for(lambda: value(scrape(edge), "cosedge_copies_in_flight") == 0)
        assert value(scrape(edge), "cosedge_copies_queued") == 0
        assert value(s, "cosedge_isp_table_load_seconds") > 0
        assert value(s, "cosedge_isp_table_generation") > 1.6e9  # the bundled tables' stamp
        # A second hit on the copied object: a hit with its bytes.
        before = value(s, "cosedge_response_bytes_total", bucket=BUCKET)
        assert get(edge.port, f"/{BUCKET}/copied.bin")[0] == 200
        after = scrape(edge)
        assert value(after, req, bucket=BUCKET, outcome="hit") == 5
        assert value(after, "cosedge_response_bytes_total", bucket=BUCKET) == before + 1234


def test_workers_add_up(tmp_path: Path) -> None:
    """With `workers: 2` one scrape counts the requests both processes answered (their
    request ids' process prefixes show both did)."""
    with running_edge(tmp_path, workers=2) as edge:
        (edge.data / BUCKET / "w.txt").write_bytes(b"abcde")
        prefixes: set[str] = set()
        sent = 0
        while sent < 400 and (len(prefixes) < 2 or sent < 40):
            status, headers, _ = get(edge.port, f"/{BUCKET}/w.txt")
            assert status == 200
            prefixes.add(headers["x-cos-request-id"][:8])
            sent += 1
        assert len(prefixes) == 2, "every request went to one process"
        s = scrape(edge)
        assert value(s, "cosedge_requests_total", bucket=BUCKET, outcome="hit") == sent
        assert value(s, "cosedge_response_bytes_total", bucket=BUCKET) == 5 * sent


def test_admin_port_routes(tmp_path: Path) -> None:
    """The admin port serves /metrics, the console's index, the signed API, and refuses
    anonymous requests; the public port serves neither /metrics nor /console/."""
    with running_edge(tmp_path) as edge:
        (edge.data / BUCKET / "o.txt").write_bytes(b"object")
        assert get(edge.port, f"/{BUCKET}/o.txt")[0] == 200
        status, _, body = get(edge.admin, "/metrics")
        assert status == 200 and b"# TYPE cosedge_requests_total counter" in body
        status, headers, body = get(edge.admin, "/console/")
        assert status == 200 and b"cosedge console" in body
        assert headers["content-type"].startswith("text/html")
        status, headers, _ = get(edge.admin, "/console")
        assert status in (301, 302) and headers["location"].endswith("/console/")
        status, _, body = signed_get(edge.admin, "/")
        assert status == 200 and BUCKET.encode() in body
        status, _, body = signed_get(edge.admin, f"/{BUCKET}/o.txt")
        assert (status, body) == (200, b"object")
        status, _, body = get(edge.admin, f"/{BUCKET}/o.txt")
        assert status == 403 and b"<Code>AccessDenied</Code>" in body
        for path in ("/metrics", "/console/"):
            status, _, body = get(edge.port, path)
            assert status == 404 and b"<Code>NoSuchBucket</Code>" in body
            assert b"cosedge_" not in body and b"<html" not in body
        # The admin port's own traffic is not counted as public requests.
        s = scrape(edge)
        assert value(s, "cosedge_requests_total", bucket=BUCKET, outcome="hit") == 1


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("admin_listen: 'nonsense:1'", "admin_listen: not a valid endpoint string"),
        ("admin_listen: 8081", "admin_listen: must be a Twisted endpoint string"),
        ("admin_listen: 'tcp:18080:interface=127.0.0.1'", "admin_listen: must differ"),
    ],
)
def test_admin_listen_errors_stop_start_up(tmp_path: Path, line: str, expected: str) -> None:
    """A bad `admin_listen` stops start-up with one line naming the file and the key."""
    config = tmp_path / "edge.yaml"
    config.write_text(
        f"listen: 'tcp:18080:interface=127.0.0.1'\n{line}\ndata_dir: {tmp_path / 'd'}\n"
    )
    proc = start_twistd("--config", str(config), cwd=tmp_path)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    text = out.decode()
    assert f"cosedge: {config}: {expected}" in text, text


def test_admin_port_in_use_stops_start_up(tmp_path: Path) -> None:
    """An admin port that cannot be bound stops start-up naming `admin_listen`."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        config = tmp_path / "edge.yaml"
        config.write_text(
            "listen: 'tcp:0:interface=127.0.0.1'\n"
            f"admin_listen: 'tcp:{busy}:interface=127.0.0.1'\ndata_dir: {tmp_path / 'd'}\n"
        )
        proc = start_twistd("--config", str(config), cwd=tmp_path)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert f"cosedge: admin_listen: cannot listen on 127.0.0.1:{busy}" in out.decode()


def test_sighup_keeps_the_admin_port_and_says_it_needs_a_restart(tmp_path: Path) -> None:
    """A changed `admin_listen` is not applied by a SIGHUP: the warning names the key, the
    admin port keeps answering where it was, and the rest of the config reloads."""
    with running_edge(tmp_path) as edge:
        config = tmp_path / "edge.yaml"
        text = config.read_text()
        config.write_text(text.replace("admin_listen: 'tcp:0:", "admin_listen: 'tcp:1:"))
        edge.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "Reloaded on SIGHUP" in edge.output.text())
        out = edge.output.text()
        assert "admin_listen changed in" in out and "needs a restart" in out
        assert get(edge.admin, "/metrics")[0] == 200


def test_a_dead_workers_counts_stay_in_the_sum(tmp_path: Path) -> None:
    """A worker killed outright (and restarted by the main process) leaves its counts in
    the scrape, while its live gauges' file is dropped (`mark_process_dead`)."""
    with running_edge(tmp_path, workers=2) as edge:
        (edge.data / BUCKET / "k.txt").write_bytes(b"kk")
        worker_pid = int(re.findall(r"Started worker 1 \(pid (\d+)\)", edge.output.text())[0])
        prefixes: set[str] = set()
        sent = 0
        while sent < 400 and (len(prefixes) < 2 or sent < 20):
            prefixes.add(get(edge.port, f"/{BUCKET}/k.txt")[1]["x-cos-request-id"][:8])
            sent += 1
        assert len(prefixes) == 2
        live_gauges = edge.data / ".cosedge" / "metrics" / f"gauge_livesum_{worker_pid}.db"
        wait_for(live_gauges.exists)  # written within GAUGE_INTERVAL of the start
        os.kill(worker_pid, signal.SIGKILL)
        wait_for(lambda: edge.output.text().count("cosedge worker") >= 2, timeout=30)
        assert not live_gauges.exists()
        assert (edge.data / ".cosedge" / "metrics" / f"counter_{worker_pid}.db").exists()
        s = scrape(edge)
        assert value(s, "cosedge_requests_total", bucket=BUCKET, outcome="hit") == sent
        assert value(s, "cosedge_copies_in_flight") == 0
