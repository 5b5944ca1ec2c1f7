"""Small helpers the service tests share: wait for a condition, a free port, processes left behind."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path


def until(what, timeout_s: float, every: float = 0.3):
    """``what()``'s first truthy value, polled every ``every`` s; AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_mentioning(*needles: str) -> list[str]:
    """Live processes whose command line or working directory names one of ``needles`` (redis-server
    rewrites its command line, but runs in its data dir); zombies are left out."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
            state = next((ln for ln in (proc / "status").read_text().splitlines() if ln.startswith("State:")), "")
        except OSError:
            continue
        if "zombie" in state:
            continue
        if any(n in args or cwd.startswith(n) for n in needles):
            found.append(f"{proc.name} {args[:150]} (cwd {cwd})")
    return found
