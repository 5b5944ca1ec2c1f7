"""The service's clients against a real `longwatch serve` (uvicorn in a subprocess, real Ray, the
embedded real Redis): the CLI's add / streams / pause / resume / remove / query / follow, the Python
client, and the mistakes a new user makes (a typo'd path, a dead camera, a bad id, a bad setting),
each a clear error at once that names what was wrong."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from waiting import free_port, until

from longwatch.client import ApiError, Client, ServiceUnavailableError

ROOT = Path(__file__).resolve().parents[1]
LONGWATCH = [sys.executable, "-m", "longwatch.cli"]


def _cli(service, *args, timeout=60):
    out = subprocess.run(
        LONGWATCH + list(args), env=service["env"], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    return out.returncode, " ".join(out.stdout.split()), " ".join(out.stderr.split())


@pytest.mark.timeout(300)
def test_add_follow_query_pause_resume_remove_from_another_terminal(service, demo_clip):
    client = Client(service["url"], token=service["admin"])
    # follow the live feed from "another terminal" before the stream exists
    followed: list[dict] = []
    follower = threading.Thread(target=lambda: _take(client.follow(), 200, 90, into=followed), daemon=True)
    follower.start()
    time.sleep(1.0)

    clip = service["media"] / "street.mp4"
    clip.write_bytes(demo_clip.read_bytes())
    rc, out, err = _cli(service, "add", str(clip), "--id", "street")
    assert rc == 0 and "added street" in out, err
    done = until(lambda: (st := client.stream("street"))["state"] == "done" and st, 120)
    assert done["desired"] == "running" and float(done["footage_s"]) == pytest.approx(10.0, abs=0.5)

    rc, out, err = _cli(service, "query", "--stream", "street", "--json", "--url", service["url"])
    assert rc == 0, err
    rows = [json.loads(line) for line in subprocess.run(
        LONGWATCH + ["query", "--stream", "street", "--json"], env=service["env"], capture_output=True, text=True,
        timeout=60, cwd=ROOT).stdout.splitlines()]  # fmt: skip
    assert rows == list(client.events(stream="street")) and any(r["event"] == "person_present" for r in rows)

    # The feed carried every segment's close, once (with an SSE id to resume from).
    until(lambda: len([f for f in followed if f["kind"] == "segment.close"]) >= len(rows), 30)
    closes = [f["segment"]["id"] for f in followed if f["kind"] == "segment.close"]
    assert sorted(closes) == sorted(r["id"] for r in rows) and all(f["cursor"] for f in followed)
    # Replay: from the cursor of the 2nd record on, exactly the records after it.
    cursor = followed[1]["cursor"]
    replay = _take(client.follow(since=cursor), len(followed) - 2, 20)
    assert [_key(f) for f in replay] == [_key(f) for f in followed[2:]]
    # Stream state changes are in the feed too: the stream went starting/running → done.
    states = [f["stream"]["state"] for f in followed if f["kind"] == "stream.state"]
    assert states[-1] == "done", [_key(f) for f in followed]

    rc, out, err = _cli(service, "streams", "--json")
    assert rc == 0, err
    listed = {r["id"]: r for r in map(json.loads, subprocess.run(
        LONGWATCH + ["streams", "--json"], env=service["env"], capture_output=True, text=True, timeout=60,
        cwd=ROOT).stdout.splitlines())}  # fmt: skip
    assert listed["street"]["state"] == "done" and listed["street"]["source"] == str(clip)

    # pause / resume a finished file: paused, then done again at once (its watermark says done)
    rc, out, err = _cli(service, "pause", "street")
    assert rc == 0 and "desired paused" in out, err
    until(lambda: client.stream("street")["state"] == "paused", 30)
    rc, out, err = _cli(service, "resume", "street")
    assert rc == 0, err
    until(lambda: client.stream("street")["state"] == "done", 60)

    rc, out, err = _cli(service, "remove", "street", "--purge")
    assert rc == 0 and "segments deleted" in out, err
    until(lambda: not any(s["id"] == "street" for s in client.streams()), 30)
    assert list(client.events(stream="street")) == []
    with pytest.raises(ApiError) as info:
        client.stream("street")
    assert info.value.status == 404 and info.value.code == "not_found"


def _key(item: dict) -> tuple:
    if item["kind"] == "stream.state":
        return item["kind"], item["stream"]["stream"], item["stream"]["state"], item["stream"]["at"]
    return item["kind"], item["segment"]["id"], item["segment"]["end_s"]


def _take(feed, n: int, timeout_s: float, *, into: list | None = None) -> list[dict]:
    out: list[dict] = into if into is not None else []
    deadline = time.monotonic() + timeout_s
    for item in feed:
        out.append(item)
        if len(out) >= n or time.monotonic() > deadline:
            break
    return out


@pytest.mark.timeout(120)
def test_a_new_users_mistakes_get_clear_errors(service, tmp_path):
    rc, _out, err = _cli(service, "add", "no/such/clip.mp4")  # outside the media root: refused, says where
    assert rc == 2 and "outside the media roots" in err and str(Path("no/such/clip.mp4").absolute()) in err, err
    rc, _out, err = _cli(service, "add", str(service["media"] / "no" / "such.mp4"))
    assert rc == 2 and "no such file" in err and str(service["media"] / "no" / "such.mp4") in err, err
    garbage = service["media"] / "garbage.mp4"
    garbage.write_bytes(b"\x00\x01not a video" * 1000)
    rc, _out, err = _cli(service, "add", str(garbage))
    assert rc == 2 and "not a readable video" in err, err
    port = free_port()  # nothing listens there: a dead camera
    rc, _out, err = _cli(service, "add", f"rtsp://admin:hunter2@127.0.0.1:{port}/cam", timeout=90)
    assert rc == 2 and "unreachable" in err and "validate=false" in err and "hunter2" not in err, err
    # Added anyway (it may come back): it waits, says why, and its password shows nowhere.
    rc, out, err = _cli(
        service, "add", f"rtsp://admin:hunter2@127.0.0.1:{port}/cam", "--id", "deadcam", "--no-validate"
    )
    assert rc == 0 and "hunter2" not in out + err, out + err
    client = Client(service["url"], token=service["admin"])
    st = until(lambda: (s := client.stream("deadcam"))["state"] in ("waiting", "failed") and s, 60)
    assert st["source"] == f"rtsp://admin:***@127.0.0.1:{port}/cam" and st["reason"] + st["error"], st
    listing = httpx.get(f"{service['url']}/api/v1/streams", headers=service.headers("read"), timeout=30).text
    rc, out, err = _cli(service, "streams", "--json")
    assert "hunter2" not in listing + out + err and "hunter2" not in service["log"].read_text()
    client.remove("deadcam", purge=True)
    until(lambda: not any(s["id"] == "deadcam" for s in client.streams()), 60)
    rc, _out, err = _cli(service, "add", str(garbage), "--id", "../../etc")
    assert rc == 2 and "stream id" in err, err
    rc, _out, err = _cli(service, "add", str(garbage), "--sampler", "max_fsp=2")
    assert rc == 2 and "max_fsp" in err, err
    cats = tmp_path / "cats.yaml"  # an event the service's pools do not score: refused, not silently unscored
    cats.write_text("- event: cat_present\n  detector: {class: cat, min_score: 0.4}\n")
    rc, _out, err = _cli(service, "add", str(garbage), "--events", str(cats))
    assert rc == 2 and "'cat_present' is not one the service scores" in err, err
    rc, _out, err = _cli(service, "pause", "nosuchstream")
    assert rc == 2 and "no stream 'nosuchstream'" in err, err
    # Over HTTP: typed JSON errors with a stable code.
    r = httpx.post(f"{service['url']}/api/v1/streams", json={"source": ""}, headers=service.headers(), timeout=30)
    assert r.status_code == 422 and r.json()["code"] == "invalid" and "source" in r.json()["message"]
    r = httpx.get(
        f"{service['url']}/api/v1/events",
        params={"after": "yesterday-ish"},
        headers=service.headers("read"),
        timeout=30,
    )
    assert r.status_code == 422 and r.json()["code"] == "invalid_time"
    r = httpx.get(
        f"{service['url']}/api/v1/events/live", headers={"Last-Event-ID": "%%%", **service.headers("read")}, timeout=30
    )
    assert r.status_code == 422 and r.json()["code"] == "invalid_cursor"
    # No service at the URL: says so, and how to start one.
    with pytest.raises(ServiceUnavailableError, match="longwatch serve"):
        Client(f"http://127.0.0.1:{free_port()}").streams()
    # A second serve on the same data: refused at once (the port, or the prefix's lease).
    rc, _out, err = _cli(service, "serve", "--port", str(service["port"]), timeout=60)
    assert rc == 2 and "cannot listen" in err, err
    rc, _out, err = _cli(service, "serve", "--port", str(free_port()), timeout=120)
    assert rc == 2 and "already running" in err, err
