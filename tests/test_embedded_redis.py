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


CHURN = """
import sys
import redis
from longwatch.pipeline.redis_server import EmbeddedRedis
bad = 0
for _ in range(int(sys.argv[2])):
    server = EmbeddedRedis(sys.argv[1]).start()
    try:
        redis.Redis(port=server.port, socket_connect_timeout=2).ping()
    except redis.ConnectionError:
        bad += 1
    server.stop()
print(bad, flush=True)
"""


def test_a_server_is_never_stopped_under_a_process_that_is_attaching_to_it(tmp_path):
    # Two processes start (or attach to) and stop the shared server over and over, as a `run` and a
    # `streams` do: every start() must return a server that answers until that process stops it.
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHURN, str(tmp_path / "redis"), "12"], stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=240)[0].strip() for p in procs]
    assert outs == ["0", "0", "0"], outs
    assert not (tmp_path / "redis" / EmbeddedRedis.STATE_FILE).exists()  # the last one out stopped it
