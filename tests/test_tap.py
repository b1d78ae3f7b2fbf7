"""The twistd plugin: options as data, the service tree on a MemoryReactor, and real
`twistd cosedge` processes for start-up, readiness, bad configs and SIGHUP."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from twisted.application.service import IService, IServiceCollection
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import IPlugin, getPlugins
from zope.interface.verify import verifyObject

from edge.process import tap
from edge.testing.process import (
    http_get,
    start_twistd,
    static_origin,
    status_of,
    twistd_env,
    wait_ready,
)


def test_plugin_is_discovered():
    """`twistd cosedge` exists: the plugin provides IServiceMaker pointing at edge.process.tap."""
    from twisted.application.service import IServiceMaker

    makers = {p.tapname: p for p in getPlugins(IServiceMaker)}
    assert "cosedge" in makers
    maker = makers["cosedge"]
    assert verifyObject(IPlugin, maker)
    assert verifyObject(IServiceMaker, maker)
    assert maker.module is tap or maker.options is tap.Options


def test_options_parse_and_override(tmp_path):
    """Options read the config file and command-line overrides win."""
    config = tmp_path / "c.yaml"
    config.write_text(f"listen: 'tcp:1234'\ndata_dir: {tmp_path / 'a'}\n")
    options = tap.Options()
    options.parseOptions(
        [
            "--config",
            str(config),
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--data-dir",
            str(tmp_path / "b"),
        ]
    )
    assert options.edge_config.listen == "tcp:0:interface=127.0.0.1"
    assert options.edge_config.data_dir == tmp_path / "b"
    assert (tmp_path / "b" / ".cosedge" / "tmp").is_dir()


def test_bad_config_exits_with_one_line(tmp_path, capsys):
    """A bad config raises SystemExit(1) after printing one line naming file and key."""
    config = tmp_path / "bad.yaml"
    config.write_text("buckets:\n  Bad: {}\n")
    with pytest.raises(SystemExit) as info:
        tap.Options().parseOptions(["--config", str(config)])
    assert info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert str(config) in err and "buckets.Bad" in err


def test_service_tree_on_memory_reactor(tmp_path):
    """makeService's tree (copier, listener, table reload) starts and listens on the
    configured endpoint, without a real socket."""
    options = tap.Options()
    options.parseOptions(["--data-dir", str(tmp_path / "d"), "--listen", "tcp:8080"])
    reactor = MemoryReactorClock()
    service = tap.build_service(options.edge_config, options.policy, options.store, reactor)
    assert verifyObject(IServiceCollection, service)
    names = {s.name for s in service}
    assert {"origin-copier", "listener", "reload"} <= names
    for child in service:
        assert verifyObject(IService, child)
    service.privilegedStartService()
    service.startService()
    assert reactor.tcpServers[0][0] == 8080
    service.stopService()


def test_twistd_runs_on_defaults_and_serves(tmp_path):
    """`twistd -n --pidfile= cosedge` (here with port 0) starts, logs readiness with the
    bound port, serves a dropped-in file path-style, and stops on SIGTERM."""
    bucket = tmp_path / "data" / "demo-1250000000"
    bucket.mkdir(parents=True)
    (bucket / "f.txt").write_bytes(b"dropped in")
    config = tmp_path / "c.yaml"
    config.write_text(
        "listen: 'tcp:0:interface=127.0.0.1'\n"
        f"data_dir: {tmp_path / 'data'}\n"
        "buckets:\n  demo-1250000000: {}\n"
    )
    proc = start_twistd("--config", str(config), cwd=tmp_path)
    try:
        port, output = wait_ready(proc)
        status, body = http_get(port, "/demo-1250000000/f.txt")
        assert (status, body) == (200, b"dropped in")
    finally:
        proc.send_signal(signal.SIGTERM)
        # Recent Twisted ends a SIGTERM'd twistd by re-raising the signal after a clean
        # shutdown (status "killed by SIGTERM"); older releases exit 0.
        assert proc.wait(timeout=20) in (0, -signal.SIGTERM)
    assert "Server Shut Down" in output.finish()


@pytest.mark.parametrize(
    "text, words",
    [
        ("nonsense: 1\n", "nonsense: unknown key"),
        (
            "buckets:\n  b-1:\n    origin: {address: '127.0.0.1:80'}\n",
            "buckets.b-1.origin.address: origin 127.0.0.1 is not accepted",
        ),
        (
            "buckets:\n  b-1:\n    origin: {address: '8.8.8.8'}\n",
            "buckets.b-1.origin.address: origin 8.8.8.8 is not accepted",
        ),
        ("listen: 'tcp:notaport'\n", "listen"),
        ("isp_ranges: /nonexistent/tables\n", "isp_ranges: /nonexistent/tables is not a folder"),
    ],
)
def test_twistd_refuses_bad_config(tmp_path, text, words):
    """A bad config stops twistd with a non-zero status and one line naming the file, the
    key and the reason; nothing starts listening."""
    config = tmp_path / "bad.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'd'}\nlisten: 'tcp:0'\n" + text
        if "listen" not in text
        else f"data_dir: {tmp_path / 'd'}\n" + text
    )
    proc = start_twistd("--config", str(config), cwd=tmp_path)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode != 0
    lines = [line for line in out.decode().splitlines() if line.strip()]
    assert len(lines) == 1, out
    assert str(config) in lines[0] and words in lines[0], lines[0]


def test_bundled_tables_accept_china_telecom_and_refuse_loopback(tmp_path):
    """With the bundled tables, an origin at 202.96.128.86 (China Telecom) is accepted and
    127.0.0.1 is refused unless extra_origin_cidrs lists it."""
    good = tmp_path / "good.yaml"
    good.write_text(
        f"data_dir: {tmp_path / 'd'}\n"
        "buckets:\n  b-1:\n    origin: {address: '202.96.128.86:8080'}\n"
    )
    options = tap.Options()
    options.parseOptions(["--config", str(good)])
    assert options.policy.check("202.96.128.86").accepted
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"data_dir: {tmp_path / 'd'}\nbuckets:\n  b-1:\n    origin: {{address: '127.0.0.1'}}\n"
    )
    with pytest.raises(SystemExit):
        tap.Options().parseOptions(["--config", str(bad)])
    bad.write_text(bad.read_text() + "extra_origin_cidrs: ['127.0.0.1/32']\n")
    tap.Options().parseOptions(["--config", str(bad)])


def test_sighup_reloads_config_and_tables_whole_or_not_at_all(tmp_path):
    """SIGHUP re-reads the config file and the ISP tables over a kept-alive connection: a
    bucket's new origin address applies at once; a config that no longer validates (its
    IP origin fell out of the new tables) is refused whole, the running one stays in force
    and the refusal is logged naming file and key. (HEAD misses only: no origin is
    contacted.)"""
    import http.client

    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "chinatelecom.txt").write_text("# test table\n202.96.128.0/24\n")
    (tmp_path / "data" / "b-1").mkdir(parents=True)
    config = tmp_path / "c.yaml"

    def write_config(address: str) -> None:
        config.write_text(
            "listen: 'tcp:0:interface=127.0.0.1'\n"
            f"data_dir: {tmp_path / 'data'}\n"
            f"isp_ranges: {tables}\n"
            f"buckets:\n  b-1:\n    origin: {{address: '{address}'}}\n"
        )

    write_config("202.96.128.86:9")
    proc = start_twistd("--config", str(config), cwd=tmp_path)
    try:
        port, output = wait_ready(proc)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

        def location() -> str | None:
            conn.request("HEAD", "/b-1/x")  # the same connection throughout
            response = conn.getresponse()
            response.read()
            return response.getheader("location")

        def after_sighup(expected: str, text: str) -> None:
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 20
            while text not in output.text() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert location() == expected

        assert location() == "http://202.96.128.86:9/x"
        write_config("202.96.128.87:9")
        after_sighup("http://202.96.128.87:9/x", "buckets changed")
        (tables / "chinatelecom.txt").write_text("# test table\n1.0.1.0/24\n")
        after_sighup("http://202.96.128.87:9/x", "Not reloaded")
        conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    refusal = [line for line in output.finish().splitlines() if "Not reloaded" in line]
    assert len(refusal) == 1
    assert f"{config}: buckets.b-1.origin.address: origin 202.96.128.87" in refusal[0]


@pytest.mark.parametrize(
    "state, words",
    [
        ("origin/examplebucket-1250000000.json", "unreadable origin rules"),
        ("buckets.json", "unreadable bucket list"),
    ],
)
def test_corrupt_state_file_stops_start_up_with_one_line(tmp_path, state, words):
    """A corrupt state file under .cosedge stops start-up with one line naming the file
    and what is wrong (it used to be a ~20-line traceback), exit status != 0."""
    data = tmp_path / "d"
    path = data / ".cosedge" / state
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    proc = start_twistd(
        "--data-dir", str(data), "--listen", "tcp:0:interface=127.0.0.1", cwd=tmp_path
    )
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode != 0
    text = out.decode()
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith("cosedge: ") and str(path) in lines[0] and words in lines[0]


def test_busy_port_stops_start_up_with_one_line(tmp_path):
    """A port another process holds stops start-up with one `cosedge:` line naming the
    address and the reason, no traceback, exit status != 0."""
    import socket

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        proc = start_twistd(
            "--data-dir",
            str(tmp_path / "d"),
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            cwd=tmp_path,
        )
        out, _ = proc.communicate(timeout=30)
    finally:
        holder.close()
    assert proc.returncode != 0
    text = out.decode()
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("cosedge: ")]
    assert errors == [f"cosedge: listen: cannot listen on 127.0.0.1:{port}: Address already in use"]


def _needs_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root; this test must run there")
        pytest.skip("needs root to drop privileges with twistd --uid")
    from edge.testing.process import REPO

    for folder in [REPO, *REPO.parents]:
        if not os.stat(folder).st_mode & 0o001:
            # After the drop the edge still imports lazily from the checkout.
            pytest.skip(f"{folder} is not searchable by other users")


def test_uid_drop_prepares_folders_as_that_user_or_refuses_naming_both(tmp_path):
    """`twistd --uid nobody`: a data folder that user cannot write stops start-up with one
    line naming the folder and the user; one it can write is prepared as that user, and
    a copy then lands as a file owned by that user (folders made as root used to make
    every copy fail with EACCES while misses still got 302s)."""
    _needs_root()
    nobody = 65534
    base = Path(tempfile.mkdtemp(prefix="cosedge-uid-", dir="/tmp"))
    os.chmod(base, 0o755)
    data = base / "data"
    data.mkdir()  # root's, 0755: nobody cannot create .cosedge in it
    origin_root = base / "origin"
    origin_root.mkdir()
    (origin_root / "hello.txt").write_bytes(b"hello as nobody")
    origin = contextlib.ExitStack()
    origin_port = origin.enter_context(static_origin(origin_root))
    config = base / "c.yaml"
    config.write_text(
        f"listen: 'tcp:0:interface=127.0.0.1'\ndata_dir: {data}\n"
        "extra_origin_cidrs: ['127.0.0.1/32']\n"
        "buckets:\n  b-1250000000:\n"
        f"    origin: {{address: '127.0.0.1:{origin_port}'}}\n"
    )

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
             "--pidfile=", f"--uid={nobody}", f"--gid={nobody}", "cosedge", "--config",
             str(config)],
            cwd=base, env=twistd_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip

    try:
        proc = start()
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode != 0
        lines = [line for line in out.decode().splitlines() if line.strip()]
        assert len(lines) == 1, out
        assert f"cannot prepare {data}/.cosedge" in lines[0] and "as user nobody" in lines[0]
        os.chown(data, nobody, nobody)
        proc = start()
        try:
            port, output = wait_ready(proc)
            url = f"http://127.0.0.1:{port}/b-1250000000/hello.txt"
            assert status_of(url) == 302
            stored = data / "b-1250000000" / "hello.txt"
            deadline = time.monotonic() + 20
            while not stored.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert stored.exists(), output.text()  # the edge's log says why it did not land
            assert stored.read_bytes() == b"hello as nobody"
            assert stored.stat().st_uid == nobody
            for folder in ("tmp", "origin", "buckets", "locks", "meta", "uploads"):
                assert (data / ".cosedge" / folder).stat().st_uid == nobody, folder
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    finally:
        origin.close()
        shutil.rmtree(base, ignore_errors=True)


def test_a_linked_state_folder_stops_start_up_with_one_line(tmp_path):
    """`.cosedge` as a symbolic link to elsewhere stops start-up with one `cosedge:` line
    (it used to be a traceback); nothing is swept or created behind the link."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.part").write_bytes(b"not ours")
    data = tmp_path / "d"
    data.mkdir()
    (data / ".cosedge").symlink_to(elsewhere)
    proc = start_twistd(
        "--data-dir", str(data), "--listen", "tcp:0:interface=127.0.0.1", cwd=tmp_path
    )
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode != 0
    lines = [line for line in out.decode().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("cosedge: ") and "link" in lines[0], lines
    assert sorted(p.name for p in elsewhere.iterdir()) == ["keep.part"]
