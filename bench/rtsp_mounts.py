"""One GStreamer RTSP server process serving one H.264 MP4 file on N mounts (for bench/e2e.py).

Runs under the *system* interpreter (``/usr/bin/python3`` with ``gi`` and GstRtspServer, as
``tests/rtsp_server.py`` does)::

    /usr/bin/python3 bench/rtsp_mounts.py FILE.mp4 --mounts 16 [--port 0] [--exit-with-stdin]

Serves ``rtsp://127.0.0.1:PORT/cam0`` … ``/cam{N-1}``: every mount is the same file
(``qtdemux ! h264parse ! rtph264pay``, paced in real time by the RTSP server's sinks), and every
client gets its own pipeline from the start of the file. Prints ``READY rtsp://127.0.0.1:PORT N`` on
stdout once it listens and exits cleanly on SIGTERM / SIGINT (or when stdin closes, with
``--exit-with-stdin``). Nothing but 127.0.0.1 is listened on.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

HOST = "127.0.0.1"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", help="an MP4 file with an H.264 video track")
    ap.add_argument("--mounts", type=int, default=1, help="number of mounts: /cam0 … /cam{N-1}")
    ap.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = any free port)")
    ap.add_argument("--exit-with-stdin", action="store_true", help="exit when stdin reaches end of file")
    args = ap.parse_args(argv)

    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    path = Path(args.file).resolve()
    if not path.is_file():
        print(f"ERROR no such file: {path}", flush=True)
        return 2

    server = GstRtspServer.RTSPServer()
    server.set_address(HOST)
    server.set_service(str(args.port))
    location = str(path).replace("\\", "\\\\").replace('"', '\\"')
    mounts = server.get_mount_points()
    for i in range(args.mounts):
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(
            f'( filesrc location="{location}" ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )'
        )
        factory.set_shared(False)
        mounts.add_factory(f"/cam{i}", factory)

    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        print(f"ERROR cannot listen on {HOST}:{args.port}", flush=True)
        return 3

    def quit_(*_a):
        loop.quit()
        return GLib.SOURCE_REMOVE

    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, quit_)
    if args.exit_with_stdin:

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
    print(f"READY rtsp://{HOST}:{server.get_bound_port()} {args.mounts}", flush=True)
    loop.run()

    def drop(_server, _client):
        return GstRtspServer.RTSPFilterResult.REMOVE

    try:
        server.client_filter(drop)
    except Exception:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
