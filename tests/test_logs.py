"""Logging: worker events relayed with their fields, and the `log_level` filter, both in
unit form and through real `twistd cosedge` processes."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from twisted.logger import Logger, LogLevel, LogPublisher, jsonFileLogObserver

from edge.config import ConfigError, parse_config
from edge.logs import LogLevelService, WorkerLogRelay
from edge.testing.process import start_twistd, wait_ready

BUCKET = "b-1250000000"


def _worker_output() -> bytes:
    """What a worker writes on stdout: RFC 7464 JSON records from twistd's JSON observer."""
    out = io.StringIO()
    log = Logger(namespace="edge.origin.copier", observer=jsonFileLogObserver(out))
    log.warn("Copy of {bucket}/{key} failed: {reason}", bucket="b", key="k/x", reason="reset")
    log.info("Stored {bucket}/{key}", bucket="b", key="k/y")
    return out.getvalue().encode()


def test_relay_re_emits_worker_events_with_their_fields_and_number():
    """However the pipe cuts the bytes, each worker record becomes one event again with
    every field, its level, and the worker's number; stray text is relayed as lines."""
    data = b"a line printed before logging started\n" + _worker_output()
    for cut in range(1, len(data), 7):
        events: list[dict] = []
        lines: list[tuple[int, str]] = []
        relay = WorkerLogRelay(
            2, emit=events.append, text=lambda n, t, seen=lines: seen.append((n, t))
        )
        relay.received(data[:cut])
        relay.received(data[cut:])
        relay.flush()
        assert [e["key"] for e in events] == ["k/x", "k/y"], cut
        first = events[0]
        assert first["bucket"] == "b" and first["reason"] == "reset" and first["worker"] == 2
        assert first["log_level"] is LogLevel.warn
        assert first["log_system"] == "worker 2: edge.origin.copier#warn"
        assert lines == [(2, "a line printed before logging started")]


def test_plain_text_lines_are_relayed_as_they_complete():
    """Text a worker prints outside its JSON records (a traceback before logging starts)
    is relayed line by line as it arrives, not held until the worker's next record."""
    lines: list[tuple[int, str]] = []
    relay = WorkerLogRelay(1, emit=lambda e: None, text=lambda n, t: lines.append((n, t)))
    relay.received(b"Traceback (most recent call last):\n  File")
    assert lines == [(1, "Traceback (most recent call last):")]
    relay.received(b' "x.py"\n')
    assert lines[-1] == (1, '  File "x.py"')


def test_log_level_filters_every_observer_and_is_undone_on_stop():
    """`log_level: warn` drops info events for each observer already on the publisher and
    lets warnings through; stopping the service puts the observers back as they were."""
    publisher = LogPublisher()
    seen: list[dict] = []
    publisher.addObserver(seen.append)
    service = LogLevelService("warn", publisher)
    service.startService()
    log = Logger(observer=publisher)
    log.info("hidden")
    log.warn("shown")
    service.stopService()
    log.info("after")
    assert [e["log_format"] for e in seen] == ["shown", "after"]


def test_bad_log_level_is_a_config_error():
    """An unknown level stops start-up naming the key."""
    with pytest.raises(ConfigError, match="log_level"):
        parse_config({"log_level": "verbose"}, "c.yaml")


def _start(tmp_path: Path, config: str, *twistd_args: str) -> subprocess.Popen[bytes]:
    path = tmp_path / "c.yaml"
    path.write_text(config)
    return start_twistd("--config", str(path), cwd=tmp_path, twistd_args=twistd_args)


def _records(text: str) -> list[dict]:
    return [json.loads(r) for r in text.split("\x1e") if r.strip().startswith("{")]


def test_worker_events_reach_the_main_process_as_events(tmp_path):
    """With `workers: 2` and `--logger edge.logs.json_observer` on the main process, the
    worker's own events arrive as JSON records with their fields and `worker: 1`, not as
    one text field."""
    (tmp_path / "data" / BUCKET).mkdir(parents=True)
    proc = _start(
        tmp_path,
        f"listen: 'tcp:0:interface=127.0.0.1'\ndata_dir: {tmp_path / 'data'}\nworkers: 2\n",
        "--logger",
        "edge.logs.json_observer",
    )
    from edge.testing.process import OutputDrain

    output = OutputDrain(proc.stdout, b"")
    worker: list[dict] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            worker = [r for r in _records(output.text()) if r.get("worker") == 1]
            if any(r.get("workers") == "worker process" for r in worker):
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    configured = [r for r in worker if r.get("workers") == "worker process"]
    assert configured, output.text()
    assert configured[0]["log_namespace"] == "edge.process.tap"
    assert configured[0]["data_dir"] == str(tmp_path / "data")
    assert not any("worker {number}: {line}" == r.get("log_format") for r in worker)


@pytest.mark.parametrize("level, logged", [("info", True), ("warn", False)])
def test_log_level_applies_to_the_access_log(tmp_path, level, logged):
    """An access line is an info event: `log_level: warn` leaves it out of twistd's log,
    `info` keeps it."""
    import http.client

    (tmp_path / "data").mkdir()
    proc = _start(
        tmp_path,
        f"listen: 'tcp:0:interface=127.0.0.1'\ndata_dir: {tmp_path / 'data'}\nlog_level: {level}\n",
    )
    try:
        port, output = wait_ready(proc)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/nobucket-1250000000/marker-key")
        conn.getresponse().read()
        conn.close()
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert ("marker-key" in output.finish()) is logged


def test_log_level_services_in_one_process_leave_each_observer_once():
    """Two edges in one process (as tests run them) started and stopped in any order, and
    an observer removed by its owner while wrapped: afterwards the publisher holds each
    remaining observer exactly once, so no event is written twice (it was, once per
    start/stop, before)."""
    publisher = LogPublisher()
    seen: list[dict] = []
    gone: list[dict] = []
    publisher.addObserver(seen.append)
    publisher.addObserver(gone.append)
    first, second = LogLevelService("info", publisher), LogLevelService("info", publisher)
    first.startService()
    second.startService()
    publisher.removeObserver(gone.append)  # its owner is done with it, while it is wrapped
    first.stopService()
    second.stopService()
    Logger(observer=publisher).info("once")
    assert [e["log_format"] for e in seen] == ["once"]
    assert gone == []
    assert len(publisher._observers) == 1
