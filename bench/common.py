"""What the benchmarks share: the machine they ran on, in one line, and a real ``longwatch serve`` in a
subprocess (:class:`ServeProcess`).

Imported as ``bench.common``: each benchmark puts the repository root on ``sys.path`` first (bench/
itself stays off it, where bench/model.py would shadow the model package). The RTSP server the live
benchmark needs is the tests' one, ``tests/rtsp_server.py`` (``from tests.rtsp_server import ...``).
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["ServeProcess", "free_port", "machine"]

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """``python -m longwatch.cli serve --port P [args]`` with ``data_dir`` as its data dir and ``env`` on
    top of a clean environment, in its own session; stopped with SIGTERM (SIGKILL to its process group
    only if it does not stop). ``token``: sent to ``/readyz`` where the service has tokens."""

    def __init__(self, data_dir: Path, log_path: Path, *, args=(), env=None, token: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data, self.log_path, self.token = data_dir, log_path, token
        self.ray_tmp = tempfile.mkdtemp(prefix="lwb-", dir="/tmp")  # short: Ray's socket paths
        drop = ("REDIS_URL", "RAY_ADDRESS", "LONGWATCH_URL", "LONGWATCH_API_TOKENS", "LONGWATCH_TOKENS_FILE")
        full = {k: v for k, v in os.environ.items() if k not in drop}
        full.update(
            RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
            RAY_AUTH_MODE="disabled",
            RAY_TMPDIR=self.ray_tmp,
            LONGWATCH_RUNTIME__DATA_DIR=str(data_dir),
            **(env or {}),
        )
        self.cmd = [sys.executable, "-m", "longwatch.cli", "serve", "--port", str(self.port), *args]
        self.log = log_path.open("w")
        self.proc = subprocess.Popen(
            self.cmd, env=full, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text()[-n:]
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 300.0) -> float:
        """Seconds until ``GET /readyz`` answers 200."""
        import httpx

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        t0 = time.perf_counter()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", headers=headers, timeout=5).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.TransportError:
                pass
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"serve not ready after {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.5)

    def stop(self, timeout: float = 120.0) -> tuple[int | None, float]:
        """(exit code, or None if it had to be killed; seconds it took)."""
        t0 = time.perf_counter()
        rc: int | None = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: only what it started
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=30)
        else:
            rc = self.proc.returncode
        self.log.close()
        shutil.rmtree(self.ray_tmp, ignore_errors=True)
        return rc, time.perf_counter() - t0


def machine() -> str:
    """CPUs (and how many this process may use), CPU model, architecture, total RAM and kernel."""
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = f"{int(Path('/proc/meminfo').read_text().split()[1]) / 2**20:.0f} GB RAM"
    except (OSError, ValueError, IndexError):
        mem = "? GB RAM"
    aff = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    return (
        f"{os.cpu_count()} CPUs (affinity {aff}), {cpu}, {platform.machine()}, {mem}, "
        f"{platform.system()} {platform.release()}"
    )
