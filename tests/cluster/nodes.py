"""Edge nodes on one S3 store and one Redis, for the cluster tests: in-process edges
assembled by `build_service` (as `twistd cosedge` does), or real twistd processes where a
test must kill one, plus a way to stop and restart the store in place."""

from __future__ import annotations

import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from twisted.internet import reactor as _reactor

from edge.api.signature import sign
from edge.config import EdgeConfig, parse_config
from edge.process.tap import build_service, load_policy
from edge.s3 import S3Client
from tests.cluster.redis_server import RedisServer
from tests.cluster.s3_server import remove_bucket
from tests.cluster.seaweedfs_server import SeaweedFS, _answers
from tests.integration.conftest import BUCKET, DOMAIN, Reply, request

reactor: Any = _reactor

SECRET = ("AKIDcluster", "cluster-secret")
NO_RULE = "norule-1250000000"  # a bucket without origin: a miss there is 404
NO_RULE_DOMAIN = "norule.example.com"
ORIGIN_XML = (
    "<OriginConfiguration><OriginRule><RulePriority>1</RulePriority>"
    "<OriginType>Proxy</OriginType><OriginInfo><HostInfo><HostName>{host}</HostName>"
    "</HostInfo></OriginInfo></OriginRule></OriginConfiguration>"
)


def api_host(bucket: str) -> str:
    return f"{bucket}.cos.ap-guangzhou.myqcloud.com"


@dataclass
class Cluster:
    """What the nodes of one test share: the store (with per-test buckets) and Redis."""

    tmp_path: Path
    seaweed: SeaweedFS
    redis: RedisServer
    origin: str
    lock_ttl: float = 2.0
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    nodes: list[Node] = field(default_factory=list)

    @property
    def store_bucket(self) -> str:
        return f"t{self.tag}-{BUCKET}"

    def raw(self, name: str) -> dict[str, Any]:
        return {
            "listen": "tcp:0:interface=127.0.0.1",
            "data_dir": str(self.tmp_path / name),
            "extra_origin_cidrs": ["127.0.0.1/32"],
            "buckets": {
                BUCKET: {"domains": [DOMAIN], "origin": {"address": self.origin}},
                NO_RULE: {"domains": [NO_RULE_DOMAIN]},
            },
            "credentials": [{"secret_id": SECRET[0], "secret_key": SECRET[1]}],
            "store": {
                "type": "s3",
                "endpoint": self.seaweed.endpoint,
                "region": self.seaweed.region,
                "access_key_id": self.seaweed.access_key,
                "secret_access_key": self.seaweed.secret_key,
                "bucket_template": f"t{self.tag}-{{bucket}}",
                "state_bucket": f"t{self.tag}-state",
            },
            "coordination": {"redis": self.redis.url, "lock_ttl": self.lock_ttl},
        }

    async def remove_buckets(self) -> None:
        """Empty and delete this test's store buckets, the configured ones and those made
        through the API (named by their markers in the state bucket): SeaweedFS gives each
        bucket volumes of its own, and a session that keeps them all runs out (writes then
        fail with NoSuchBucket)."""
        client = self.client()
        state = f"t{self.tag}-state"
        try:
            made: list[str] = []
            if await client.head_bucket(state):
                page = await client.list_objects_v2(state, prefix="buckets/")
                made = [item.key.removeprefix("buckets/") for item in page.contents]
            for name in (BUCKET, NO_RULE, *made):
                await remove_bucket(client, f"t{self.tag}-{name}")
            await remove_bucket(client, state)
        finally:
            await client.close()

    def client(self) -> S3Client:
        s = self.seaweed
        return S3Client(s.endpoint, s.region, s.access_key, s.secret_key)

    async def start(self, name: str) -> Node:
        config = parse_config(self.raw(name), f"{name}.yaml")
        service = build_service(config, load_policy(config), None, reactor)
        service.startService()
        port = await service.getServiceNamed("listener")._waitingForPort
        node = Node(name, config, service, port.getHost().port)
        self.nodes.append(node)
        return node

    def write_config(self, name: str, **extra: Any) -> Path:
        """A config file for a real twistd node, `extra` top-level keys (`workers`) added."""
        path = self.tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**self.raw(name), **extra}))
        return path


@dataclass
class Node:
    """One in-process edge node."""

    name: str
    config: EdgeConfig
    service: Any
    port: int
    stopped: bool = False

    @property
    def store(self) -> Any:
        return self.service.getServiceNamed("s3-store")._store

    @property
    def copier(self) -> Any:
        return self.service.getServiceNamed("origin-copier")

    async def get(self, key: str, **kwargs: Any) -> Reply:
        return await request(self.port, "/" + key, **kwargs)

    async def signed(
        self, method: str, path: str, bucket: str, params: dict[str, str], body: bytes = b""
    ) -> Reply:
        """A management request signed with the cluster's credential."""
        host = api_host(bucket)
        auth = sign(*SECRET, method, path, params, {"host": host})
        query = "&".join(f"{k}={v}" if v else k for k, v in params.items())
        target = path + (f"?{query}" if query else "")
        return await request(
            self.port, target, method=method, host=host, headers={"Authorization": auth},
            body=body or None,
        )  # fmt: skip

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.service.stopService()


def restart_store(server: SeaweedFS, timeout: float = 30) -> None:
    """Start `weed mini` again on the same ports and data after `server.stop()`."""
    args = [str(a) for a in server.process.args]  # type: ignore[union-attr]
    server.log_path = server.directory / f"weed-{time.monotonic_ns()}.log"
    with open(server.log_path, "wb") as log:
        server.process = subprocess.Popen(
            args, cwd=server.directory, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    server.stopped = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = b"All enabled components are running" in server.log_path.read_bytes()
        if ready and _answers(server.s3_port):
            return
        time.sleep(0.05)
    raise AssertionError(f"weed mini did not come back:\n{server.log_tail()}")
