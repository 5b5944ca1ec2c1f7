"""A real RTSP server for tests and benchmarks: GStreamer's GstRtspServer serving a video file on 127.0.0.1.

The one RTSP server of the repository: the tests import it, and ``bench/e2e.py`` imports it as
``tests.rtsp_server`` (one process serving the same file on N mounts, one per camera). Two halves:

* Run as a script under the *system* interpreter (``/usr/bin/python3``, which has ``gi`` and
  GstRtspServer from Debian's ``python3-gi`` / ``gir1.2-gst-rtsp-server-1.0``)::

      /usr/bin/python3 tests/rtsp_server.py FILE.mp4 [--port 0] [--mount /cam[=OTHER.mp4] ...] [--rtcp-interval S]

  serves the file (MP4/H.264: ``qtdemux ! h264parse ! rtph264pay``), paced in real time, at
  ``rtsp://127.0.0.1:PORT/MOUNT`` for each ``--mount`` (repeat it for several mounts; default
  ``/stream``; ``/cam=OTHER.mp4`` serves another file on that mount); prints ``READY URL [URL ...]`` (one URL per mount, in order) on stdout once it
  listens (``--port 0`` lets the kernel choose), and exits cleanly on SIGTERM / SIGINT. Each client
  gets its own pipeline, from the start of the file.

* Imported from tests (``from rtsp_server import RtspServer``; pytest puts ``tests/`` on
  ``sys.path``): :class:`RtspServer` starts that script with :mod:`subprocess`, waits for READY, and
  can stop and restart it on the same port (a camera that goes away and comes back). Where the
  system interpreter lacks GstRtspServer it calls ``pytest.skip`` with the reason (or raises
  ``RuntimeError``, with ``skip_if_unavailable=False``, as the benchmarks ask).

This module must stay importable by both interpreters: the script half imports ``gi`` only in
``main()``, the test half imports ``pytest`` only when it needs to skip.
"""

from __future__ import annotations

import collections
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

SYSTEM_PYTHON = os.environ.get("LONGWATCH_GI_PYTHON", "/usr/bin/python3")
HOST = "127.0.0.1"
SCRIPT = Path(__file__).resolve()

_GI_CHECK = (
    "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
    "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
    "missing = [e for e in ('qtdemux', 'h264parse', 'rtph264pay') if Gst.ElementFactory.find(e) is None]; "
    "print('missing GStreamer elements: ' + ', '.join(missing) if missing else 'ok ' + Gst.version_string())"
)
_availability: str | None = None  # cached: "ok" or the reason it is unavailable
_gst_version = "GStreamer ?"


# ---- the server (runs under /usr/bin/python3) -------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", help="an MP4 file with an H.264 video track")
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = any free port)")
    parser.add_argument(
        "--mount",
        action="append",
        default=None,
        help="mount point, e.g. /cam; repeat it to serve the file on several mounts (default: /stream); "
        "/cam=OTHER.mp4 serves another file on that mount",
    )
    parser.add_argument(
        "--rtcp-interval",
        type=float,
        default=None,
        help="minimum seconds between RTCP sender reports (default: GStreamer's, 5 s); a large value "
        "keeps the first report from reaching a client before it has started playing",
    )
    parser.add_argument(
        "--exit-with-stdin",
        action="store_true",
        help="exit when stdin reaches end of file (the parent that holds the pipe has gone away)",
    )
    args = parser.parse_args(argv)

    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    mounts: list[tuple[str, Path]] = []
    for spec in args.mount or ["/stream"]:
        name, _, other = spec.partition("=")
        mounts.append((name if name.startswith("/") else "/" + name, Path(other or args.file).resolve()))
    for _name, path in mounts:
        if not path.is_file():
            print(f"ERROR no such file: {path}", flush=True)
            return 2

    server = GstRtspServer.RTSPServer()
    server.set_address(HOST)
    server.set_service(str(args.port))

    def on_prepared(media):
        for i in range(media.n_streams()):
            session = media.get_stream(i).get_rtpsession()
            if session is not None:
                session.set_property("rtcp-min-interval", int(args.rtcp_interval * 1e9))

    for mount, path in mounts:
        location = str(path).replace("\\", "\\\\").replace('"', '\\"')
        factory = GstRtspServer.RTSPMediaFactory()
        # The sinks the RTSP server adds sync to the pipeline clock: the file is sent in real time.
        # config-interval=-1 repeats SPS/PPS with every IDR so a client that joins late can decode.
        factory.set_launch(
            f'( filesrc location="{location}" ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )'
        )
        factory.set_shared(False)
        if args.rtcp_interval is not None:
            factory.connect("media-configure", lambda _f, media: media.connect("prepared", on_prepared))
        server.get_mount_points().add_factory(mount, factory)

    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        print(f"ERROR cannot listen on {HOST}:{args.port}", flush=True)
        return 3
    port = server.get_bound_port()

    def quit_(*_a):
        loop.quit()
        return GLib.SOURCE_REMOVE

    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, quit_)
    if args.exit_with_stdin:
        # A test run killed outright (SIGKILL, os._exit) never sends SIGTERM; its end of the pipe
        # closes though, so the server does not outlive it.
        def on_stdin(fd, _cond):
            try:
                data = os.read(fd, 4096)
            except OSError:
                data = b""
            if data:
                return GLib.SOURCE_CONTINUE
            loop.quit()
            return GLib.SOURCE_REMOVE

        GLib.io_add_watch(
            sys.stdin.fileno(), GLib.PRIORITY_DEFAULT, GLib.IOCondition.IN | GLib.IOCondition.HUP, on_stdin
        )
    print("READY " + " ".join(f"rtsp://{HOST}:{port}{m}" for m, _p in mounts), flush=True)
    loop.run()

    # Close the clients (and their media pipelines) before leaving, so nothing lingers.
    def drop(_server, _client):
        return GstRtspServer.RTSPFilterResult.REMOVE

    try:
        server.client_filter(drop)
    except Exception:  # pragma: no cover - best effort on shutdown
        pass
    sys.stdout.flush()
    return 0


# ---- the test helper (runs under the project's interpreter) ----------------------------------


def gi_rtsp_unavailable() -> str | None:
    """``None`` when ``SYSTEM_PYTHON`` can run the server, else the reason it cannot."""
    global _availability, _gst_version
    if _availability is None:
        if not Path(SYSTEM_PYTHON).exists():
            _availability = f"{SYSTEM_PYTHON} not found (GStreamer's RTSP server runs under the system python3)"
        else:
            try:
                proc = subprocess.run([SYSTEM_PYTHON, "-c", _GI_CHECK], capture_output=True, text=True, timeout=60)
                out = proc.stdout.strip().splitlines()
                if proc.returncode == 0 and out and out[-1].startswith("ok "):
                    _availability = "ok"
                    _gst_version = out[-1][3:]
                elif proc.returncode == 0 and out:
                    _availability = f"{SYSTEM_PYTHON}: {out[-1]}"
                else:
                    err = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
                    _availability = (
                        f"{SYSTEM_PYTHON} lacks gi/GstRtspServer ({err}); install python3-gi "
                        "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad"
                    )
            except (OSError, subprocess.TimeoutExpired) as exc:
                _availability = f"cannot run {SYSTEM_PYTHON}: {exc}"
    return None if _availability == "ok" else _availability


def gst_version() -> str:
    """``Gst.version_string()`` under the system interpreter (``GStreamer 1.22.0``), or ``GStreamer ?``
    where it cannot run the server."""
    gi_rtsp_unavailable()
    return _gst_version


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class RtspServer:
    """GstRtspServer serving ``video`` at ``rtsp://127.0.0.1:PORT/MOUNT`` in a child process.

    >>> with RtspServer("clip.mp4") as srv:          # doctest: +SKIP
    ...     src = Source.open(srv.url)
    ...     srv.stop(); srv.start()                   # same port, same URL

    ``mount``: one mount point, or several (``[f"/cam{i}" for i in range(16)]``: one process serving
    the file on each; ``url`` is the first one's, ``urls`` all of them, in order).
    ``videos``: one file per mount, in the same order, instead of ``video`` on every mount (cameras
    that do not all show the same thing at the same moment).
    ``port=None``: the first start lets the server pick a free port; later starts reuse it.
    ``rtcp_interval_s``: minimum seconds between RTCP sender reports (``None``: GStreamer's default);
    0.5 makes a client learn the stream's NTP wall-clock time while it probes, 3600 makes it never.
    Raises ``pytest.skip`` (``skip_if_unavailable=True``) where the system python lacks gi.
    """

    def __init__(
        self,
        video: str | os.PathLike,
        *,
        port: int | None = None,
        mount: str | Sequence[str] = "/stream",
        ready_timeout_s: float = 30.0,
        skip_if_unavailable: bool = True,
        rtcp_interval_s: float | None = None,
        videos: Sequence[str | os.PathLike] | None = None,
    ):
        self.video = Path(video)
        self.port = port
        names = [mount] if isinstance(mount, str) else list(mount)
        if not names:
            raise ValueError("RtspServer needs at least one mount")
        self.mounts = [m if m.startswith("/") else "/" + m for m in names]
        self.mount = self.mounts[0]
        self.videos = [Path(v) for v in videos] if videos is not None else [self.video] * len(self.mounts)
        if len(self.videos) != len(self.mounts):
            raise ValueError(f"RtspServer: {len(self.videos)} videos for {len(self.mounts)} mounts")
        self.ready_timeout_s = ready_timeout_s
        self.rtcp_interval_s = rtcp_interval_s
        self.skip_if_unavailable = skip_if_unavailable
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.log_tail: collections.deque[str] = collections.deque(maxlen=200)

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the server has not been started yet")
        return f"rtsp://{HOST}:{self.port}{self.mount}"

    @property
    def urls(self) -> list[str]:
        """One URL per mount, in the order the mounts were given."""
        if self.port is None:
            raise RuntimeError("the server has not been started yet")
        return [f"rtsp://{HOST}:{self.port}{m}" for m in self.mounts]

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> RtspServer:
        """Start (or restart, on the same port) and wait until it listens."""
        if self.running:
            return self
        reason = gi_rtsp_unavailable()
        if reason is not None:
            if self.skip_if_unavailable:
                import pytest

                pytest.skip(reason)
            raise RuntimeError(reason)
        for v in {self.video, *self.videos}:
            if not v.is_file():
                raise FileNotFoundError(v)
        deadline = time.monotonic() + self.ready_timeout_s
        last = ""
        while True:
            line, output = self._spawn(deadline)
            if line is not None:
                self.port = urlsplit(line.split()[1]).port
                self.starts += 1
                return self
            last = output
            # A restart can race the old socket's release: retry on the same port until the deadline.
            if self.port is None or time.monotonic() >= deadline:
                raise RuntimeError(f"RTSP server did not become ready within {self.ready_timeout_s:.0f}s:\n{last}")
            time.sleep(0.2)

    def _spawn(self, deadline: float) -> tuple[str | None, str]:
        cmd = [
            SYSTEM_PYTHON,
            str(SCRIPT),
            str(self.video),
            "--port",
            str(self.port or 0),
            *(
                arg
                for m, v in zip(self.mounts, self.videos, strict=True)
                for arg in ("--mount", m if v == self.video else f"{m}={v}")
            ),
            "--exit-with-stdin",
        ]
        if self.rtcp_interval_s is not None:
            cmd += ["--rtcp-interval", repr(float(self.rtcp_interval_s))]
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)  # the venv's site-packages must not leak into the system python
        env.pop("PYTHONHOME", None)
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,  # never written; closing it (or our death) tells the server to exit
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # our SIGINT (Ctrl-C on pytest) does not hit it half-way
        )
        self.proc = proc
        lines: queue.Queue[str | None] = queue.Queue()
        reader = threading.Thread(target=self._drain, args=(proc, lines), daemon=True)
        reader.start()
        seen: list[str] = []
        while True:
            try:
                text = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if text is None:
                break  # the process closed its output: it died
            seen.append(text)
            if text.startswith("READY "):
                return text, "\n".join(seen)
        self._terminate()
        return None, "\n".join(seen)

    def _drain(self, proc: subprocess.Popen, lines: queue.Queue[str | None]) -> None:
        """Read the server's output for its whole life (a full pipe would block it); keep a tail."""
        assert proc.stdout is not None
        try:
            for raw in iter(proc.stdout.readline, b""):
                text = raw.decode(errors="replace").rstrip()
                self.log_tail.append(text)
                lines.put(text)
        except (OSError, ValueError):
            pass
        finally:
            lines.put(None)

    def _terminate(self, grace_s: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=grace_s)
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass

    def stop(self) -> None:
        """Stop the server process (SIGTERM, then SIGKILL); connected clients see the connection drop."""
        self._terminate()

    def __enter__(self) -> RtspServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self) -> None:  # last-resort cleanup; normal paths call stop()
        try:
            self._terminate(grace_s=1.0)
        except Exception:
            pass


if __name__ == "__main__":
    sys.exit(main())
