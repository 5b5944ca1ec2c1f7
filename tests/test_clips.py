"""Segment footage (issue #10): clip.mp4 remuxes a file segment's span without re-encoding, with times that
map exactly onto the stream seconds longwatch gave its frames; strip.jpg shows first, best and last frame;
a camera has no clip and says so. Then the whole path through the real service: a file and a camera added
over HTTP, processed by the real runtime (Ray, the Serve detector pool, the embedded Redis), their
segments' media fetched the way a browser does (``?token=``).

Real footage only: bikes.mp4 (B-frames; the project fetches it itself), six copies of it, and the team's
files where present (a 10 fps H.264 clip with B-frames, a 12.5 fps one with audio and no B-frames, an
MS-MPEG4 AVI that MP4 cannot carry)."""

from __future__ import annotations

import io
import shutil

import av
import httpx
import numpy as np
import pytest
from conftest import footage_file
from waiting import until

from longwatch.pipeline.clips import (
    ClipUnavailableError,
    RecordingGoneError,
    check_recording,
    clip_problem,
    frames_at,
    open_clip,
    recording_path,
)
from longwatch.pipeline.identity import source_fingerprint
from longwatch.pipeline.source import Source
from longwatch.pipeline.thumbs import THUMB_WIDTH, decode_jpeg

API = "/api/v1"


def _source_times(path) -> np.ndarray:
    src = Source.open(str(path))
    try:
        return np.array([f.t for f in src.frames()])
    finally:
        src.close()


def _decode(data: bytes) -> tuple[list[float], av.VideoCodecContext]:
    with av.open(io.BytesIO(data)) as c:
        vs = c.streams.video[0]
        times = [float(f.time) for f in c.decode(vs)]
        return times, vs.codec_context.name


def _check_clip(data: bytes, offset_s: float, first_s: float, start: float, end: float, source: np.ndarray, pad=1.0):
    """The clip decodes; its frames, mapped with the offset, are exactly the source's frames from the keyframe
    at or before the padded start through the padded end; they bracket the segment."""
    times, _codec = _decode(data)
    mapped = np.array(times) + offset_s
    assert len(mapped) > 0
    nearest = np.abs(source[None, :] - mapped[:, None]).min(axis=1)
    assert nearest.max() < 1e-6, "a clip frame's time is not a source frame's time"
    assert mapped[0] == pytest.approx(first_s, abs=1e-6)
    assert mapped[0] <= max(0.0, start - pad) + 1e-6 and mapped[-1] >= min(end + pad, source[-1]) - 1e-6
    assert mapped[0] <= start and mapped[-1] >= end  # brackets the segment
    want = source[(source >= mapped[0] - 1e-6) & (source <= min(end + pad, source[-1]) + 1e-6)]
    assert set(np.round(want, 6)) <= set(np.round(mapped, 6)), "a source frame of the span is missing"
    assert np.all(np.diff(mapped) > 0)


# ---- the remux itself -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spans",
    [[(1.26, 8.28), (4.24, 5.76), (0.0, 0.5), (9.2, 9.96)]],
    ids=["bikes"],
)
def test_clips_of_bikes_map_exactly_onto_the_streams_seconds(demo_clip, spans):
    source = _source_times(demo_clip)
    for start, end in spans:
        clip = open_clip(str(demo_clip), start, end, pad_s=1.0)
        data = b"".join(clip)
        assert data[4:8] == b"ftyp" and b"moof" in data  # fragmented MP4
        _check_clip(data, clip.offset_s, clip.first_s, start, end, source)
        assert clip.first_s - clip.offset_s == pytest.approx(0.08)  # bikes: 2 frames of B-frame reorder delay
        assert _decode(data)[1] == "h264"


def test_a_clip_deep_in_a_long_file_starts_at_the_keyframe_before_it(demo_long):
    source = _source_times(demo_long)
    for start, end in [(31.26, 38.28), (45.0, 45.04), (57.0, 59.9)]:
        clip = open_clip(str(demo_long), start, end)
        _check_clip(b"".join(clip), clip.offset_s, clip.first_s, start, end, source)
        assert clip.first_s <= start - 1.0


@pytest.mark.parametrize(
    "name,spans",
    [
        ("one-by-one-person-detection.mp4", [(6.1, 20.2), (92.1, 120.5), (123.5, 136.5)]),
        ("car-detection.mp4", [(0.2, 3.0), (20.0, 29.0)]),
    ],
)
def test_clips_of_the_teams_footage(name, spans):
    path = footage_file(name)
    source = _source_times(path)
    for start, end in spans:
        clip = open_clip(str(path), start, end)
        _check_clip(b"".join(clip), clip.offset_s, clip.first_s, start, end, source)


def test_a_video_mp4_cannot_carry_has_no_clip_but_its_frames_decode():
    path = footage_file("vtest.avi")  # MS-MPEG4 v3
    assert "cannot go into MP4" in (clip_problem(str(path)) or "")
    with pytest.raises(ClipUnavailableError):
        open_clip(str(path), 10.0, 20.0)
    frames = frames_at(str(path), [10.0, 15.0])
    assert [f.shape for f in frames] == [(576, 768, 3)] * 2


def test_frames_at_are_the_frames_the_pipeline_decoded(demo_clip):
    src = Source.open(str(demo_clip))
    want = {}
    for f in src.frames():
        if round(f.t, 2) in (1.48, 5.04, 9.96):
            want[round(f.t, 2)] = f.av_frame.to_ndarray(format="rgb24")
    src.close()
    got = frames_at(str(demo_clip), [1.48, 5.04, 9.96, 5.05])  # 5.05: the nearest frame, 5.04
    for img, t in zip(got, (1.48, 5.04, 9.96, 5.04)):
        assert np.array_equal(img, want[t]), t


def test_a_recording_that_is_gone_or_changed_is_refused(demo_clip, tmp_path):
    copy = tmp_path / "bikes.mp4"
    shutil.copy(demo_clip, copy)
    fp = source_fingerprint(str(demo_clip))
    check_recording(str(copy), fp)  # the same content elsewhere (another mtime): fine
    copy.write_bytes(copy.read_bytes()[:-1000] + b"\0" * 1000)  # same size, other content
    with pytest.raises(RecordingGoneError, match="no longer the file"):
        check_recording(str(copy), fp)
    copy.unlink()
    with pytest.raises(FileNotFoundError):  # RecordingGoneError is one
        check_recording(str(copy), fp)
    assert recording_path(f"file://{demo_clip}") == str(demo_clip)
    assert recording_path("rtsp://127.0.0.1:8554/cam") is None and recording_path(None) is None


# ---- through the real service -----------------------------------------------------------------------


def _get(service, path, **params):
    params.setdefault("token", service["read"])  # as <img src> and <video src> do: no header
    return httpx.get(f"{service['url']}{path}", params=params, timeout=120)


def _add(service, source: str, sid: str) -> None:
    r = httpx.post(f"{service['url']}{API}/streams", json={"source": source, "id": sid}, headers=service.headers(),
                   timeout=120)  # fmt: skip
    assert r.status_code == 201, r.text


def _remove(service, sid: str) -> None:
    httpx.delete(f"{service['url']}{API}/streams/{sid}", params={"purge": "true"}, headers=service.headers(),
                 timeout=60)  # fmt: skip
    store = service.store()
    until(lambda: not store.stream_keys(sid), 120)  # purged: segments, pictures, everything


def _events(service, sid: str) -> list[dict]:
    r = httpx.get(f"{service['url']}{API}/events", params={"stream": sid, "limit": 1000},
                  headers=service.headers("read"), timeout=60)  # fmt: skip
    assert r.status_code == 200, r.text
    return r.json()["items"]


@pytest.mark.timeout(600)
def test_a_file_streams_media_over_http(service, demo_clip):
    folder = service["media"] / "media-test"
    folder.mkdir(exist_ok=True)
    path = folder / "bikes.mp4"
    shutil.copy(demo_clip, path)
    sid = "mediafile"
    _add(service, str(path), sid)
    try:

        def done() -> bool:
            r = httpx.get(f"{service['url']}{API}/streams/{sid}", headers=service.headers("read"), timeout=30)
            return r.json().get("state") == "done"

        until(done, 300, every=1.0)
        events = _events(service, sid)
        assert {e["event"] for e in events} >= {"person_present", "car_present", "scene_cut"}, events
        source = _source_times(path)
        for ev in events:
            base = f"{API}/events/{ev['id']}"
            media = _get(service, f"{base}/media")
            assert media.status_code == 200, media.text
            m = media.json()
            q = f"?stream={sid}"
            assert m["recording"] == "file" and m["clip_unavailable"] is None
            assert (m["thumbnail"], m["clip"], m["strip"]) == (f"{base}/thumbnail.jpg{q}", f"{base}/clip.mp4{q}",
                                                               f"{base}/strip.jpg{q}")  # fmt: skip

            thumb = _get(service, m["thumbnail"])
            assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
            img = decode_jpeg(thumb.content)
            assert img.shape[1] <= THUMB_WIDTH
            assert float(thumb.headers["x-longwatch-frame-s"]) == pytest.approx(m["frame_s"])
            if ev["event"] != "scene_cut":
                assert m["box"] is not None and ev["start_s"] - 1e-3 <= m["frame_s"] <= ev["end_s"] + 1e-3

            clip = _get(service, m["clip"])
            assert clip.status_code == 200, clip.text
            assert clip.headers["content-type"] == "video/mp4"
            assert clip.headers["content-disposition"].startswith('inline; filename="mediafile_')
            offset = float(clip.headers["x-longwatch-clip-offset-s"])
            first = float(clip.headers["x-longwatch-clip-start-s"])
            assert float(clip.headers["x-longwatch-segment-start-s"]) == pytest.approx(ev["start_s"], abs=1e-3)
            start, end = (
                float(clip.headers["x-longwatch-segment-start-s"]),
                float(clip.headers["x-longwatch-segment-end-s"]),
            )
            _check_clip(clip.content, offset, first, start, end, source)

            strip = _get(service, m["strip"])
            assert strip.status_code == 200 and strip.headers["content-type"] == "image/jpeg"
            cells = decode_jpeg(strip.content)
            assert cells.shape[0] == img.shape[0] and cells.shape[1] == 3 * img.shape[1] + 8
        one = events[0]["id"]
        download = _get(service, f"{API}/events/{one}/clip.mp4", stream=sid, download="true", pad="0")
        assert download.status_code == 200 and download.headers["content-disposition"].startswith("attachment;")
        # the lookup without ?stream= finds the segment too; no token: refused; bad ids: 422; unknown: 404
        assert _get(service, f"{API}/events/{one}/thumbnail.jpg").status_code == 200
        assert _get(service, f"{API}/events/{one}/thumbnail.jpg", token="nope").status_code == 401
        assert httpx.get(f"{service['url']}{API}/events/{one}/clip.mp4", timeout=30).status_code == 401
        assert _get(service, f"{API}/events/not-an-id/clip.mp4").json()["code"] == "invalid_id"
        assert _get(service, f"{API}/events/{'0' * 20}/media").json()["code"] == "not_found"

        # the file changes under the service: its clips are refused (its thumbnails stay)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        gone = _get(service, f"{API}/events/{one}/clip.mp4", stream=sid)
        assert gone.status_code == 410 and gone.json()["code"] == "recording_gone", gone.text
        m = _get(service, f"{API}/events/{one}/media", stream=sid).json()
        assert m["clip"] is None and "no longer" in m["clip_unavailable"] and m["thumbnail"] is not None
        assert _get(service, m["thumbnail"]).status_code == 200
    finally:
        _remove(service, sid)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_segment_stored_without_a_thumbnail_says_so(service):
    from longwatch.pipeline.types import Segment

    store = service.store()
    seg = Segment("nothumb", "person_present", 1.0, 2.0)
    store.bulk_load("nothumb", [seg])  # as segments stored before thumbnails existed
    try:
        r = _get(service, f"{API}/events/{seg.id}/thumbnail.jpg", stream="nothumb")
        assert r.status_code == 404 and r.json()["code"] == "no_thumbnail"
        m = _get(service, f"{API}/events/{seg.id}/media").json()
        assert (m["thumbnail"], m["strip"], m["recording"]) == (None, None, "none")
    finally:
        store.drop_stream("nothumb")


@pytest.mark.rtsp
@pytest.mark.timeout(600)
def test_a_camera_has_a_strip_and_no_clip(service, demo_long):
    from rtsp_server import RtspServer

    sid = "mediacam"
    with RtspServer(demo_long, mount="/media") as cam:
        _add(service, cam.url, sid)
        try:

            def a_closed_segment():
                return [e for e in _events(service, sid) if e["state"] == "closed" and e["event"] != "scene_cut"]

            ev = until(a_closed_segment, 180, every=1.0)[0]
            base = f"{API}/events/{ev['id']}"
            m = _get(service, f"{base}/media").json()
            assert m["recording"] == "none" and m["clip"] is None and m["clip_unavailable"] is None
            assert m["strip"] == f"{base}/strip.jpg?stream={sid}" and m["box"] is not None
            clip = _get(service, f"{base}/clip.mp4")
            assert clip.status_code == 409, clip.text
            assert clip.json()["code"] == "no_recording" and clip.json()["strip"] == m["strip"]
            thumb = decode_jpeg(_get(service, m["thumbnail"]).content)
            strip = _get(service, m["strip"])
            assert strip.status_code == 200
            cells = decode_jpeg(strip.content)
            assert cells.shape[0] == thumb.shape[0] and cells.shape[1] == 3 * thumb.shape[1] + 8
        finally:
            _remove(service, sid)
