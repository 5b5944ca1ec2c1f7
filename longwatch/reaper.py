"""Nothing of ours outlives the ``serve`` or ``run`` process, even when it is SIGKILLed.

Ray's head processes die with the process that started them (the kernel's parent-death signal), but
their agents and the stream workers they spawned are re-parented to init and would run on. So the
CLI makes its process the leader of a process group of its own (Ray's processes inherit the group)
and starts a reaper: a small process in a session of its own that waits on a pipe from us. When the
pipe closes (we exited, however) it kills what is left of our group. The embedded Redis server runs
in a session of its own and is not killed: the next start adopts it, with its data.
"""

from __future__ import annotations

import os
import subprocess
import sys

_REAPER = """
import os, signal, sys, time
pgid = int(sys.argv[1])
sys.stdin.buffer.read()  # returns when the parent's end of the pipe closes: the parent is gone
time.sleep(float(sys.argv[2]))
try:
    os.killpg(pgid, signal.SIGKILL)
except (ProcessLookupError, PermissionError):
    pass
"""

_started: subprocess.Popen | None = None


def own_process_group() -> bool:
    """Make this process a process-group leader (it is one already in an interactive shell or under
    systemd). False where it cannot be (then no reaper is started: it must never kill another group)."""
    if os.getpgrp() == os.getpid():
        return True
    for fd in (0, 1, 2):  # in a terminal's foreground group (a pipeline): moving out would lose Ctrl-C
        try:
            if os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp():
                return False
        except OSError:
            pass
    try:
        os.setpgid(0, 0)
    except OSError:
        return False
    return os.getpgrp() == os.getpid()


def start_reaper(grace_s: float = 2.0) -> bool:
    """Start the reaper of this process's group (once). Returns whether one runs."""
    global _started
    if _started is not None:
        return True
    if not sys.platform.startswith("linux") or not own_process_group():
        return False
    _started = subprocess.Popen(
        [sys.executable, "-c", _REAPER, str(os.getpgrp()), str(grace_s)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
    # Our end of the pipe must not leak into children (Ray's processes): then the pipe would stay open
    # after we die, and the reaper would wait for them.
    if _started.stdin is not None:
        os.set_inheritable(_started.stdin.fileno(), False)
    return True
