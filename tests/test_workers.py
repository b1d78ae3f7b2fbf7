"""`--workers N`: processes sharing one listening socket, one origin fetch per key across
them, and no worker outliving the main process."""

from __future__ import annotations

import http.client
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread

from edge.config import ConfigError, OriginAddress, OriginFetchConfig, parse_config
from edge.origin.copier import CopyStart, OriginCopier
from edge.process import tap
from edge.store.folder.keylocks import KeyLocks
from edge.store.folder.store import FolderStore as ObjectStore
from edge.testing.origin import FakeOrigin
from edge.testing.process import http_get, start_twistd, wait_ready
from tests.test_origin import HangingAgent

BUCKET = "b-1250000000"


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("value", [0, -1, 65, "many", 1.5, True])
def test_bad_worker_counts_are_refused(value):
    """`workers:` of 0, a negative number, more than 64, a word, a fraction or a boolean is
    refused with a ConfigError saying it must be a number of processes."""
    with pytest.raises(ConfigError, match="workers: must be a number of processes"):
        parse_config({"workers": value}, "w.yaml")


def test_auto_and_option_override(tmp_path):
    """`workers: auto` means one process per CPU core (at least one), and `--workers 3` on the
    command line gives a configuration with three workers."""
    assert parse_config({"workers": "auto"}, "w.yaml").workers == max(1, os.cpu_count() or 1)
    options = tap.Options()
    options.parseOptions(["--data-dir", str(tmp_path / "d"), "--workers", "3"])
    assert options.edge_config.workers == 3


def test_internal_option_is_not_in_the_help():
    """The plugin's help text lists `--workers` but not `--inherited-fd`, the option the main
    process uses to start its workers."""
    text = str(tap.Options())
    assert "--workers" in text
    assert "inherited-fd" not in text


def _copier(tmp_path: Path, agent: HangingAgent) -> tuple[OriginCopier, Clock]:
    store = ObjectStore(tmp_path / "data", ["b-1"])
    store.prepare(sweep=False)
    clock = Clock()
    copier = OriginCopier(clock, store, OriginFetchConfig(), lambda address, port, meter: agent)
    return copier, clock


def test_copier_leaves_a_key_to_the_process_copying_it(tmp_path):
    """Two copiers on one data folder, as two worker processes have: while the first copies
    a key the second skips it (no origin request), other keys are unaffected, and once the
    first copy ends, failed here, the key can be copied again."""
    first_agent, second_agent = HangingAgent(), HangingAgent()
    first, first_clock = _copier(tmp_path, first_agent)
    second, second_clock = _copier(tmp_path, second_agent)
    origin = OriginAddress.parse("203.0.113.7")
    assert first.copy("b-1", "k", origin, "203.0.113.7") is CopyStart.STARTED
    assert second.copy("b-1", "k", origin, "203.0.113.7") is CopyStart.ELSEWHERE
    assert second.copy("b-1", "other", origin, "203.0.113.7") is CopyStart.STARTED
    assert second_agent.requests == [b"http://203.0.113.7/other"]
    assert [j.key for j in second.in_flight()] == ["other"]
    assert second.counters["elsewhere"] == 1
    first_clock.advance(OriginFetchConfig().idle_timeout + 1)  # no headers: the copy fails
    assert first.in_flight() == [] and first.counters["failed"] == 1
    assert second.copy("b-1", "k", origin, "203.0.113.7") is CopyStart.STARTED
    assert second_agent.requests[-1] == b"http://203.0.113.7/k"
    second_clock.advance(OriginFetchConfig().idle_timeout + 1)
    assert second.in_flight() == []
    assert not list((tmp_path / "data" / ".cosedge" / "locks").iterdir())


def test_copy_runs_unlocked_when_the_locks_folder_is_broken(tmp_path):
    """When `.cosedge/locks` is a file instead of a folder, so no key lock can be taken, a copy
    still starts and asks the origin for the key, and once it times out nothing is left in
    flight."""
    agent = HangingAgent()
    copier, clock = _copier(tmp_path, agent)
    locks = tmp_path / "data" / ".cosedge" / "locks"
    locks.rmdir()  # made by prepare(); broken here on purpose
    locks.write_text("not a folder")
    origin = OriginAddress.parse("203.0.113.7")
    assert copier.copy("b-1", "k", origin, "203.0.113.7") is CopyStart.STARTED
    assert agent.requests == [b"http://203.0.113.7/k"]
    clock.advance(OriginFetchConfig().idle_timeout + 1)
    assert copier.in_flight() == []


def test_key_lock_is_exclusive_and_released(tmp_path):
    """Two holders of the same data folder (as two processes would be): the second cannot
    take a key the first holds; after release it can, and the lock file is gone."""
    first, second = KeyLocks(tmp_path), KeyLocks(tmp_path)
    held = first.acquire("b-1", "k")
    assert held is not None
    assert second.acquire("b-1", "k") is None
    assert second.acquire("b-1", "other") is not None
    held.release()
    again = second.acquire("b-1", "k")
    assert again is not None
    again.release()
    assert not os.path.exists(first.path_for("b-1", "k"))


def _config(tmp_path: Path, origin: str | None = None) -> Path:
    (tmp_path / "data" / BUCKET).mkdir(parents=True, exist_ok=True)
    text = (
        "listen: 'tcp:0:interface=127.0.0.1'\n"
        f"data_dir: {tmp_path / 'data'}\n"
        "workers: 2\n"
        "extra_origin_cidrs: ['127.0.0.1/32']\n"
        f"buckets:\n  {BUCKET}:\n"
    )
    text += f"    origin: {{address: '{origin}'}}\n" if origin else "    domains: []\n"
    path = tmp_path / "edge.yaml"
    path.write_text(text)
    return path


def test_two_processes_serve_and_stop_together(tmp_path):
    """With `workers: 2` the main process starts one worker; 2,400 GETs of a stored object
    from 16 clients all get 200 and the worker spends CPU serving part of them, and after
    SIGTERM to the main process the worker exits too."""
    (tmp_path / "data" / BUCKET).mkdir(parents=True)
    (tmp_path / "data" / BUCKET / "f.bin").write_bytes(os.urandom(4096))
    proc = start_twistd("--config", str(_config(tmp_path)), cwd=tmp_path)
    try:
        port, output = wait_ready(proc)
        deadline = time.monotonic() + 20
        while "cosedge worker" not in output.text() and time.monotonic() < deadline:
            time.sleep(0.05)
        (worker,) = children(proc.pid)
        before = cpu_ticks(worker)

        def hammer(_: int) -> int:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            codes = 0
            for _ in range(150):
                conn.request("GET", f"/{BUCKET}/f.bin")
                response = conn.getresponse()
                response.read()
                codes += response.status == 200
            conn.close()
            return codes

        with ThreadPoolExecutor(16) as pool:
            assert sum(pool.map(hammer, range(16))) == 16 * 150
        assert cpu_ticks(worker) > before  # the worker accepted and served part of it
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(worker)


@pytest_twisted.ensureDeferred
async def test_one_origin_fetch_per_key_across_workers(tmp_path):
    """200 concurrent misses of one key spread over two processes: one origin request."""
    origin = FakeOrigin(reactor)
    listening = reactor.listenTCP(0, origin.factory(), interface="127.0.0.1")
    address = f"127.0.0.1:{listening.getHost().port}"
    origin.serve("/one.bin", b"x" * 100_000, body_delay=1.5)
    proc = start_twistd("--config", str(_config(tmp_path, address)), cwd=tmp_path)
    try:
        port, output = wait_ready(proc)
        deadline = time.monotonic() + 20
        while "cosedge worker" not in output.text() and time.monotonic() < deadline:
            time.sleep(0.05)

        def miss(_: int) -> int:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            conn.request("GET", f"/{BUCKET}/one.bin")
            status = conn.getresponse().status
            conn.close()
            return status

        def storm() -> list[int]:
            with ThreadPoolExecutor(200) as pool:
                return list(pool.map(miss, range(200)))

        statuses = await deferToThread(storm)
        assert statuses == [302] * 200
        target = tmp_path / "data" / BUCKET / "one.bin"
        from tests.integration.conftest import wait_until

        await wait_until(lambda: target.exists(), timeout=20)
        assert len(origin.requests_for("/one.bin")) == 1
        # The copy releases (and removes) its lock once the folder is flushed, a moment
        # after the object appears; a late miss in the other process may take it briefly.
        locks = tmp_path / "data" / ".cosedge" / "locks"
        await wait_until(lambda: not list(locks.glob("*.lock")), timeout=10)
        assert len(origin.requests_for("/one.bin")) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        await deferToThread(proc.wait, 30)
        origin.drop_all()
        await listening.stopListening()


def _live_workers(pid: int) -> list[int]:
    return [child for child in children(pid) if alive(child)]


def test_crashed_worker_is_restarted_and_workers_die_with_a_killed_parent(tmp_path):
    """A worker killed with SIGKILL is logged as ended and restarted in 1 s as a new process,
    and the edge still answers (404 for a missing key); when the main process itself is
    SIGKILLed, with no clean shutdown, that worker dies with it."""
    proc = start_twistd("--config", str(_config(tmp_path)), cwd=tmp_path)
    try:
        port, output = wait_ready(proc)
        deadline = time.monotonic() + 20
        while "cosedge worker" not in output.text() and time.monotonic() < deadline:
            time.sleep(0.05)
        (first,) = _live_workers(proc.pid)
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while output.text().count("cosedge worker") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "Worker 1 ended" in output.text() and "restarting it in 1s" in output.text()
        (second,) = _live_workers(proc.pid)
        assert second != first
        assert http_get(port, f"/{BUCKET}/nothing")[0] == 404
    finally:
        proc.kill()  # no clean shutdown: the kernel must end the worker (PR_SET_PDEATHSIG)
        proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while alive(second) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(second)


def test_sighup_reaches_every_worker_and_each_logs_its_reload(tmp_path):
    """SIGHUP to the main process is passed on to the workers: after a changed origin
    address, every connection, whichever process accepts it, redirects to the new one,
    and the log shows the main process's reload and the worker's (with its number)."""
    import http.client

    config = _config(tmp_path, "127.0.0.1:9")
    proc = start_twistd("--config", str(config), cwd=tmp_path)
    try:
        port, output = wait_ready(proc)
        deadline = time.monotonic() + 20
        while "cosedge worker" not in output.text() and time.monotonic() < deadline:
            time.sleep(0.05)
        _config(tmp_path, "127.0.0.1:10")
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while output.text().count("Reloaded on SIGHUP") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)

        def location(_: int) -> str | None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("HEAD", f"/{BUCKET}/x")
            response = conn.getresponse()
            response.read()
            conn.close()
            return response.getheader("location")

        with ThreadPoolExecutor(8) as pool:
            locations = set(pool.map(location, range(80)))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert locations == {"http://127.0.0.1:10/x"}
    reloads = [line for line in output.finish().splitlines() if "Reloaded on SIGHUP" in line]
    assert len(reloads) == 2 and sum("[worker 1:" in line for line in reloads) == 1, reloads
