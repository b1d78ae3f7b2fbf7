"""The buffered access-log file: batching, timed flush, formats, reopen (logrotate),
close; the `access_log` config key; an edge writing its access lines to a file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from edge.config import AccessLogConfig, ConfigError, parse_config
from edge.web.accesslog import AccessLogFile, AccessLogService

FIELDS: tuple[Any, ...] = (
    b"127.0.0.1",
    b"GET",
    b"/k?q-signature=REDACTED",
    b"HTTP/1.1",
    200,
    4096,
    b"http://r/",
    b"curl/8",
    b"abc123",
    0.4321,
)
NOW = 1795000000.25  # 2026-11-18 11:06:40 UTC


def _log(path: Path, **kwargs: Any) -> tuple[AccessLogFile, Clock]:
    clock = Clock()
    access = AccessLogFile(path, clock, now=lambda: NOW, **kwargs)
    access.open()
    return access, clock


def test_combined_line_has_every_field(tmp_path):
    """A combined-format line carries every field, the signature redacted, the request
    id and the duration last."""
    access, clock = _log(tmp_path / "a.log")
    access.add(*FIELDS)
    access.close()
    assert (tmp_path / "a.log").read_text() == (
        '127.0.0.1 - - [18/Nov/2026:11:06:40 +0000] "GET /k?q-signature=REDACTED HTTP/1.1" '
        '200 4096 "http://r/" "curl/8" abc123 0.4ms\n'
    )


def test_json_line_has_the_same_fields(tmp_path):
    """The JSON format carries the same fields as the combined one, typed."""
    access, clock = _log(tmp_path / "a.log", fmt="json")
    access.add(*FIELDS)
    access.close()
    line = json.loads((tmp_path / "a.log").read_text())
    assert line == {
        "time": "2026-11-18T11:06:40Z",
        "remote": "127.0.0.1",
        "method": "GET",
        "uri": "/k?q-signature=REDACTED",
        "protocol": "HTTP/1.1",
        "code": 200,
        "length": 4096,
        "referer": "http://r/",
        "user_agent": "curl/8",
        "request_id": "abc123",
        "duration_ms": 0.4,
    }


def test_lines_wait_for_the_buffer_or_the_interval(tmp_path):
    """Lines are written when the buffer fills or the flush interval passes, whichever
    comes first; closing writes the rest and leaves no timer; lines after close are dropped."""
    path = tmp_path / "a.log"
    access, clock = _log(path, buffer_size=1000, flush_interval=1.0)
    access.add(*FIELDS)
    assert path.read_bytes() == b""
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(1.0)
    assert path.read_text().count("\n") == 1
    assert not clock.getDelayedCalls()
    for _ in range(20):  # over 1000 bytes: written without waiting
        access.add(*FIELDS)
    assert path.read_text().count("\n") > 1
    access.close()
    assert path.read_text().count("\n") == 21
    assert not clock.getDelayedCalls()
    access.add(*FIELDS)  # after the stop: dropped, no timer
    assert not clock.getDelayedCalls()


def test_reopen_after_rename_starts_a_new_file(tmp_path):
    """After logrotate renames the file, reopen() sends buffered lines to the renamed
    file and new ones to a fresh file at the configured path."""
    path = tmp_path / "a.log"
    access, clock = _log(path)
    access.add(*FIELDS)
    os.rename(path, tmp_path / "a.log.1")
    access.reopen()  # the buffered line goes to the renamed file
    access.add(*FIELDS)
    access.close()
    assert (tmp_path / "a.log.1").read_text().count("\n") == 1
    assert path.read_text().count("\n") == 1


def test_two_processes_appending_never_split_a_line(tmp_path):
    """Workers each append their own batches with O_APPEND: lines stay whole."""
    path = tmp_path / "a.log"
    one, _ = _log(path, buffer_size=300)
    two, _ = _log(path, buffer_size=700)
    for i in range(500):
        (one if i % 3 else two).add(*FIELDS)
    one.close()
    two.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 500
    assert set(lines) == {lines[0]}


def test_service_flushes_on_stop(tmp_path):
    """Stopping the access-log service writes what is still buffered."""
    path = tmp_path / "a.log"
    clock = Clock()
    access = AccessLogFile(path, clock)
    service = AccessLogService(access, clock, signals=False)
    service.startService()
    access.add(*FIELDS)
    service.stopService()
    assert path.read_text().count("\n") == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/var/log/a.log", AccessLogConfig(Path("/var/log/a.log"))),
        (None, AccessLogConfig(None)),
        (
            {"path": "/a.log", "format": "json", "buffer": "128KiB", "flush": 2},
            AccessLogConfig(Path("/a.log"), "json", 128 * 1024, 2.0),
        ),
    ],
)
def test_access_log_config(value, expected):
    """`access_log` accepts a path, null (off) or a mapping, with its defaults filled in."""
    assert parse_config({"access_log": value}, "e.yaml").access_log == expected


def test_access_log_unset_keeps_the_twistd_log():
    """Without `access_log`, access lines stay in the twistd log as before."""
    assert parse_config({}, "e.yaml").access_log is None


@pytest.mark.parametrize(
    ("value", "key", "reason"),
    [
        (3, "access_log", "must be a path, null (off) or a mapping"),
        ({"path": "/a", "colour": 1}, "access_log.colour", "unknown key"),
        ({"path": "/a", "format": "xml"}, "access_log.format", "must be one of combined, json"),
        ({"path": "/a", "flush": 0}, "access_log.flush", "must be a number of seconds > 0"),
        ({"path": "/a", "buffer": "lots"}, "access_log.buffer", "must be a size"),
        ("", "access_log", "must be a non-empty path string"),
    ],
)
def test_access_log_config_errors(value, key, reason):
    """Each bad `access_log` value is refused naming its key and reason, and judged on
    its own: a bad key elsewhere is reported in the same run."""
    with pytest.raises(ConfigError) as caught:
        parse_config({"access_log": value, "workers": 0}, "e.yaml")
    problems = caught.value.problems
    assert len(problems) == 2  # judged on its own: the bad workers is reported too
    mine = [p for p in problems if p.key == key]
    assert mine and mine[0].source == "e.yaml" and reason in mine[0].reason


@pytest_twisted.ensureDeferred
async def test_edge_writes_access_lines_to_its_file(tmp_path, captured_access):
    """A running edge writes its access lines to the configured file, signature
    redacted and request id included, and none to the twistd log."""
    from tests.integration.conftest import BUCKET, EdgeFactory, request

    factory = EdgeFactory(tmp_path)
    config = factory.config(None)
    from dataclasses import replace

    log_path = tmp_path / "access.log"
    config = replace(config, access_log=AccessLogConfig(log_path))
    edge = await factory.start(config)
    try:
        (edge.data_dir / BUCKET / "k.txt").write_bytes(b"hello")
        reply = await request(
            edge.port, "/k.txt?q-signature=secret&v=1", headers={"User-Agent": "ua/1"}
        )
        assert reply.status == 200
    finally:
        await edge.stop()
    line = log_path.read_text()
    request_id = reply.header("x-cos-request-id")
    assert f'"GET /k.txt?q-signature=REDACTED&v=1 HTTP/1.1" 200 5 "-" "ua/1" {request_id} ' in line
    assert "secret" not in line
    assert not captured_access  # no access event in the twistd log meanwhile


@pytest_twisted.ensureDeferred
async def test_access_log_off(tmp_path, captured_access):
    """`access_log: null` turns access lines off: none anywhere."""
    from dataclasses import replace

    from tests.integration.conftest import BUCKET, EdgeFactory, request

    factory = EdgeFactory(tmp_path)
    config = replace(factory.config(None), access_log=AccessLogConfig(None))
    edge = await factory.start(config)
    try:
        (edge.data_dir / BUCKET / "k.txt").write_bytes(b"hello")
        assert (await request(edge.port, "/k.txt")).status == 200
    finally:
        await edge.stop()
    assert not captured_access


@pytest.fixture
def captured_access():
    from twisted.logger import globalLogPublisher

    events: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "cosedge.access":
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


@pytest_twisted.ensureDeferred
async def test_sigusr1_reopens_the_file(tmp_path):
    """SIGUSR1 reopens the access file (after a rename) and is passed on to the workers."""
    import signal

    from twisted.internet import reactor

    from tests.integration.conftest import wait_until

    path = tmp_path / "a.log"
    access = AccessLogFile(path, reactor)
    forwarded: list[bool] = []
    service = AccessLogService(access, reactor, lambda: forwarded.append(True))
    service.startService()
    try:
        access.add(*FIELDS)
        os.rename(path, tmp_path / "a.log.1")
        os.kill(os.getpid(), signal.SIGUSR1)
        await wait_until(lambda: path.exists())
        assert forwarded == [True]  # passed on to the workers
        access.add(*FIELDS)
    finally:
        service.stopService()
    assert (tmp_path / "a.log.1").read_text().count("\n") == 1
    assert path.read_text().count("\n") == 1


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["q-signature", "Q%2Dsign", "x-cos-security-token", "v", "+q-ak", "a"]),
            st.text("abcq%-+=", max_size=5),
        ),
        max_size=4,
    )
)
def test_fast_redaction_agrees_with_redact_uri(params):
    """The access file's shortcut never keeps a secret `errors.redact_uri` would hide."""
    from edge.api import errors
    from edge.web.site import _redacted

    uri = ("/k?" + "&".join(f"{k}={v}" for k, v in params)).encode()
    assert _redacted(uri) == errors.redact_uri(uri)
