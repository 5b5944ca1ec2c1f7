"""The service lease: one running longwatch runtime per Redis prefix.

A runtime (``serve`` or a one-shot ``run``) holds ``<prefix>:lease`` in Redis: its owner
(``host:pid``) with a time to live, renewed by a thread. A second runtime with the same prefix is
refused while the owner lives. A lease left by a process that died is taken over at once when the
owner ran on this host and its pid is gone (a ``serve`` restarted by systemd after a crash), else once
its time to live has passed (another machine).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Any

from .errors import ConfigError
from .keys import text
from .redis_server import pid_alive

__all__ = ["LeaseHeldError", "ServiceLease"]


class LeaseHeldError(ConfigError):
    """Another live runtime holds this prefix's lease."""


class ServiceLease:
    def __init__(self, client: Any, *, prefix: str, ttl_s: float = 15.0):
        self.r = client
        self.key = f"{prefix}:lease"
        self.prefix = prefix
        self.ttl_ms = int(ttl_s * 1000)
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
        self._value = json.dumps(self.owner, sort_keys=True)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def holder(self) -> dict | None:
        raw = self.r.get(self.key)
        return json.loads(text(raw)) if raw is not None else None

    def acquire(self) -> ServiceLease:
        """Take the lease (or raise :class:`LeaseHeldError` naming its live holder); renew it until
        :meth:`release`."""
        for _ in range(3):
            if self.r.set(self.key, self._value, nx=True, px=self.ttl_ms):
                break
            raw = self.r.get(self.key)
            if raw is None:
                continue  # expired meanwhile
            held = json.loads(text(raw))
            if held.get("host") == self.owner["host"] and not pid_alive(int(held.get("pid", 0))):
                # Its process is gone (killed, crashed): take over now, unless another took it first.
                with self.r.pipeline(transaction=True) as pipe:
                    pipe.watch(self.key)
                    if text(pipe.get(self.key)) == text(raw):
                        pipe.multi()
                        pipe.set(self.key, self._value, px=self.ttl_ms)
                        pipe.execute()
                        break
                continue
            raise LeaseHeldError(
                f"a longwatch runtime with prefix {self.prefix!r} is already running "
                f"(pid {held.get('pid')} on {held.get('host')}); stop it, or use another prefix (runtime.redis_prefix)"
            )
        else:
            raise LeaseHeldError(f"could not take the lease of prefix {self.prefix!r}")
        self._thread = threading.Thread(target=self._renew, name="lease", daemon=True)
        self._thread.start()
        return self

    def _renew(self) -> None:
        every = self.ttl_ms / 3000.0
        while not self._stop.wait(every):
            try:
                if text(self.r.get(self.key)) in (None, self._value):
                    self.r.set(self.key, self._value, px=self.ttl_ms)
            except Exception:  # Redis away: renew when it is back
                pass

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            if text(self.r.get(self.key)) == self._value:
                self.r.delete(self.key)
        except Exception:
            pass
