"""What the benchmarks share: the machine they ran on, in one line.

Imported as ``bench.common``: each benchmark puts the repository root on ``sys.path`` first (bench/
itself stays off it, where bench/model.py would shadow the model package). The RTSP server the live
benchmark needs is the tests' one, ``tests/rtsp_server.py`` (``from tests.rtsp_server import ...``).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["machine"]


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
