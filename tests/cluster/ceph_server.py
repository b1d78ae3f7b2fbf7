"""A throwaway single-node Ceph (one mon, one memstore OSD, one RADOS Gateway) on 127.0.0.1,
for running the S3 client and store tests against a second, stricter S3 implementation.

RGW checks SigV4 signatures and `x-amz-content-sha256` payload hashes as AWS does, enforces
the 5 MiB multipart minimum and validates bucket names, where SeaweedFS is lenient; running the
same tests against both keeps us from depending on one store's leniency. The cluster is built
as Ceph's own `src/vstart.sh` does, minus everything optional: `auth = none` between the
daemons (S3 signatures are RGW's own, unaffected), no mgr (pool creation is the mon's), an
OSD on `memstore` (RAM only, nothing on disk but the mon's store), and small pools of size 1.
It is ready in about 12 s, most of it RGW creating its pools. The daemons run in the
foreground (`-f`) so they are stopped by the PIDs we hold. The binaries come from Debian
(`apt-get install ceph-mon ceph-osd radosgw ceph-common`); without them the fixture fails,
never skips.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest

ACCESS_KEY = "cosedge-test-key"
SECRET_KEY = "cosedge-test-secret-0123456789"
# RGW takes the region from the request's credential scope; the zonegroup is "default".
REGION = "us-east-1"
BINARIES = ("monmaptool", "ceph-mon", "ceph-osd", "ceph", "radosgw", "radosgw-admin")

_CONF = """\
[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{mon_port}
mon initial members = a
public addr = 127.0.0.1
# Between the daemons only: S3 requests are still signed and checked by RGW.
auth cluster required = none
auth service required = none
auth client required = none
# Daemons insist on a "secure" mon connection by default, which auth none cannot give.
ms mon client mode = crc
ms bind ipv6 = false
ms bind msgr1 = false
run dir = {dir}/run
log file = {dir}/$name.log
admin socket = {dir}/run/$name.asok
keyring = /dev/null
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
# RGW makes ~8 pools: keep them small so one OSD may hold them all.
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
mon data avail warn = 1
mon data avail crit = 0
[mon]
mon data = {dir}/mon.$id
mon cluster log file = {dir}/cluster.log
[osd]
osd data = {dir}/osd.$id
osd objectstore = memstore
memstore device bytes = {memstore_bytes}
osd crush chooseleaf type = 0
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:{rgw_port}
rgw data = {dir}/rgw
rgw enable usage log = false
rgw enable ops log = false
"""


def find_ceph() -> dict[str, str]:
    """Where each Ceph binary the cluster needs is; fails the test if one is missing."""
    found = {name: shutil.which(name) for name in BINARIES}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        pytest.fail(
            f"Ceph binaries not found ({', '.join(missing)}): the Ceph RGW tests need them "
            "(Debian: apt-get install ceph-mon ceph-osd radosgw ceph-common)",
            pytrace=False,
        )
    return {name: str(path) for name, path in found.items()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class CephRGW:
    """One running single-node cluster; `endpoint` is its RADOS Gateway."""

    directory: Path
    rgw_port: int
    conf: Path
    bins: dict[str, str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION
    started_in: float = 0.0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.rgw_port}"

    def run(self, tool: str, *args: str, stdin: bytes | None = None) -> bytes:
        """Run a Ceph command-line tool against this cluster; fail the test if it fails."""
        done = subprocess.run(
            [self.bins[tool], "-c", str(self.conf), *args],
            input=stdin,
            capture_output=True,
            timeout=60,
            cwd=self.directory,
        )
        if done.returncode != 0:
            self.stop()
            pytest.fail(
                f"{tool} {' '.join(args)} exited with {done.returncode}:\n"
                f"{done.stderr.decode(errors='replace')[-3000:]}",
                pytrace=False,
            )
        return done.stdout

    def daemon(self, tool: str, *args: str) -> subprocess.Popen[bytes]:
        """Start a daemon in the foreground, output into its own log, so we hold its PID."""
        name = Path(tool).name
        with open(self.directory / f"{name}.out", "ab") as out:
            process = subprocess.Popen(
                [self.bins[tool], "-c", str(self.conf), "-f", *args],
                cwd=self.directory,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.processes.append(process)
        return process

    def log_tail(self, size: int = 3000) -> str:
        """The end of every daemon log, for a failure message."""
        parts = []
        for log in sorted(self.directory.glob("*.log")) + sorted(self.directory.glob("*.out")):
            parts.append(f"--- {log.name}\n" + log.read_bytes()[-size:].decode(errors="replace"))
        return "\n".join(parts)

    def check_running(self) -> None:
        """Fail the test (with the logs) if a daemon has exited."""
        for process in self.processes:
            if process.poll() is not None:
                tail = self.log_tail()
                self.stop()
                name = Path(cast(list[str], process.args)[0]).name
                pytest.fail(f"{name} exited with {process.returncode}:\n{tail}")

    def stop(self) -> None:
        """Stop the daemons, newest first (SIGTERM, SIGKILL after 5 s: nothing is kept)."""
        while self.processes:
            process = self.processes.pop()
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)


def start_ceph(directory: Path, timeout: float = 90, memstore_bytes: int = 1 << 30) -> CephRGW:
    """Build and start the cluster in `directory`, create the S3 user and wait until RGW
    answers an unsigned GET /."""
    bins = find_ceph()
    started = time.monotonic()
    fsid = str(uuid.uuid4())
    mon_port, rgw_port = _free_port(), _free_port()
    for sub in ("run", "mon.a", "osd.0", "rgw"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    conf = directory / "ceph.conf"
    conf.write_text(
        _CONF.format(
            fsid=fsid,
            mon_port=mon_port,
            rgw_port=rgw_port,
            dir=directory,
            memstore_bytes=memstore_bytes,
        )
    )
    cluster = CephRGW(directory, rgw_port, conf, bins)
    monmap = str(directory / "monmap")
    subprocess.run(
        [bins["monmaptool"], "--create", "--fsid", fsid]
        + ["--addv", "a", f"[v2:127.0.0.1:{mon_port}]", monmap],
        check=True,
        capture_output=True,
    )
    cluster.run("ceph-mon", "--mkfs", "-i", "a", "--monmap", monmap)
    cluster.daemon("ceph-mon", "-i", "a")
    osd_uuid = str(uuid.uuid4())
    # `osd new` waits for the mon to form its quorum of one.
    osd_id = cluster.run("ceph", "osd", "new", osd_uuid).decode().strip()
    cluster.run("ceph-osd", "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid)
    cluster.daemon("ceph-osd", "-i", osd_id)
    deadline = started + timeout
    while json.loads(cluster.run("ceph", "osd", "stat", "--format", "json"))["num_up_osds"] < 1:
        _tick(cluster, deadline, "the OSD never came up")
    cluster.daemon("radosgw", "-n", "client.rgw")
    while not _answers(cluster.endpoint):
        _tick(cluster, deadline, "RGW never answered")
    cluster.run(
        "radosgw-admin",
        *("user", "create", "--uid=cosedge", "--display-name=cosedge"),
        f"--access-key={ACCESS_KEY}",
        f"--secret={SECRET_KEY}",
    )
    cluster.started_in = time.monotonic() - started
    return cluster


def _tick(cluster: CephRGW, deadline: float, what: str) -> None:
    cluster.check_running()
    if time.monotonic() > deadline:
        tail = cluster.log_tail()
        cluster.stop()
        pytest.fail(f"{what} within the start-up timeout:\n{tail}")
    time.sleep(0.1)


def _answers(endpoint: str) -> bool:
    """Whether an unsigned GET / gets an HTTP answer (anonymous ListBuckets is 200)."""
    try:
        with urllib.request.urlopen(endpoint + "/", timeout=1) as response:
            return bool(response.status)
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def ceph_rgw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CephRGW]:
    """The session's Ceph RGW, started on first use: shared by every test, each using its
    own buckets; stopped by PID and its folder removed at the end of the session."""
    directory = tmp_path_factory.mktemp("ceph")
    cluster = start_ceph(directory)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)
