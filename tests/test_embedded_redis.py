"""The embedded Redis server shared by several longwatch processes on one data dir (a `streams` while a
`run` starts, say): whoever started it never stops it under a process still attached to it; the last
one out stops it, and nothing is left."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from longwatch.pipeline.redis_server import EmbeddedRedis, pid_alive

ATTACH = """
import sys
from longwatch.pipeline.redis_server import EmbeddedRedis
server = EmbeddedRedis(sys.argv[1]).start()
print(server.port, flush=True)
sys.stdin.readline()
server.stop()
print("stopped", flush=True)
"""


def test_the_owner_hands_a_shared_server_over_and_the_last_one_out_stops_it(tmp_path):
    import redis

    owner = EmbeddedRedis(tmp_path / "redis").start()
    pid = owner.proc.pid
    other = subprocess.Popen(
        [sys.executable, "-c", ATTACH, str(tmp_path / "redis")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert int(other.stdout.readline()) == owner.port  # attached to ours, not a second server
        owner.stop()  # the other process is still attached: the server stays, handed over
        assert pid_alive(pid) and redis.Redis(port=owner.port).ping()
        other.stdin.write("\n")
        other.stdin.flush()
        assert other.stdout.readline().strip() == "stopped"
        deadline = time.monotonic() + 15
        while pid_alive(pid) and time.monotonic() < deadline:
            try:  # it is our child (we started it): reap it once it has exited
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.05)
        assert not pid_alive(pid)  # the last one out stopped it
        assert not (tmp_path / "redis" / EmbeddedRedis.STATE_FILE).exists()
    finally:
        other.kill()
        if pid_alive(pid):
            subprocess.run(["kill", "-9", str(pid)])


def test_alone_the_owner_stops_it(tmp_path):
    owner = EmbeddedRedis(tmp_path / "redis").start()
    pid = owner.proc.pid
    owner.stop()
    assert not pid_alive(pid)
