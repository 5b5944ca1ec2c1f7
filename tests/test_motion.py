"""Motion model: noise, lighting steps, small and stopped objects, zones, exact resume, bad input, a real clip."""

from __future__ import annotations

import json
import math

import av
import cv2
import numpy as np
import pytest

from longwatch.pipeline.errors import LongwatchError, MotionError, MotionStateError
from longwatch.pipeline.motion import MotionBox, MotionFrame, MotionModel, motion_score, zone_mask

W, H, FPS = 160, 90, 8.0


def background(seed: int = 1) -> np.ndarray:
    """A static textured scene, float grey levels ~60..170."""
    rng = np.random.default_rng(seed)
    coarse = cv2.resize(rng.uniform(0, 1, (H // 8, W // 8)).astype(np.float32), (W, H), interpolation=cv2.INTER_CUBIC)
    return 60.0 + 80.0 * np.clip(coarse, 0, 1) + 30.0 * np.arange(W)[None, :] / W


def frame(scene: np.ndarray, rng: np.random.Generator, *, noise: float = 3.0, jpeg: int | None = None) -> np.ndarray:
    img = np.clip(np.rint(scene + rng.normal(0, noise, scene.shape)), 0, 255).astype(np.uint8)
    if jpeg is not None:
        img = cv2.imdecode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, jpeg])[1], cv2.IMREAD_GRAYSCALE)
    return img


def with_square(scene: np.ndarray, x: int, y: int, side: int, value: float) -> np.ndarray:
    out = scene.copy()
    out[y : y + side, x : x + side] = value
    return out


@pytest.mark.parametrize(("noise", "jpeg"), [(3.0, None), (5.0, None), (2.0, 40)])
def test_static_noisy_scene_is_quiet(noise, jpeg):
    rng = np.random.default_rng(2)
    scene, model = background(), MotionModel()
    first = model.push(0.0, frame(scene, rng, noise=noise, jpeg=jpeg))
    assert first.boxes == () and first.moving == 0.0 and not first.global_change
    assert first.mask.shape == (H, W) and first.mask.dtype == np.uint8
    for i in range(1, 120):
        f = model.push(i / FPS, frame(scene, rng, noise=noise, jpeg=jpeg))
        assert f.boxes == () and f.moving == 0.0 and not f.global_change, i
        assert motion_score(f, min_area=0.001) == 0.0


@pytest.mark.parametrize("change", ["offset", "gain", "darker"])
def test_brightness_step_is_global_change_then_quiet(change):
    rng = np.random.default_rng(3)
    scene, model = background(), MotionModel()
    lit = {"offset": scene + 40, "gain": scene * 1.3, "darker": scene - 40}[change]
    for i in range(16):
        assert model.push(i / FPS, frame(scene, rng)).boxes == ()
    step = model.push(16 / FPS, frame(lit, rng))
    assert step.global_change and step.boxes == () and step.moving == 0.0 and not step.mask.any()
    assert motion_score(step, min_area=0.001) == 0.0
    for i in range(17, 60):
        f = model.push(i / FPS, frame(lit, rng))
        assert f.boxes == () and not f.global_change, i


def test_gradual_lighting_is_not_motion():
    rng = np.random.default_rng(4)
    scene, model = background(), MotionModel()
    for i in range(160):  # +60 grey levels and ×1.15 gain over 20 s (auto exposure, dusk)
        k = min(1.0, i / 120)
        f = model.push(i / FPS, frame(scene * (1 + 0.15 * k) + 30 * k, rng))
        assert f.boxes == () and not f.global_change, i
    for t in (20.0 + 30.0, 50.0 + 1 / FPS):  # a 30 s hole in the stream, same light: still quiet
        f = model.push(t, frame(scene * 1.15 + 30, rng))
        assert f.boxes == () and not f.global_change, t


def test_small_moving_square_is_found_where_it_is():
    rng = np.random.default_rng(5)
    scene, model = background(), MotionModel()
    for i in range(8):
        model.push(i / FPS, frame(scene, rng))
    side, y = 6, 40  # 36 px = 0.25 % of 160×90
    for k in range(30):
        x = 20 + 3 * k
        f = model.push((8 + k) / FPS, frame(with_square(scene, x, y, side, 235.0), rng))
        assert f.boxes, k
        box = f.boxes[0]
        assert abs((box.x0 + box.x1) / 2 * W - (x + side / 2)) <= 1.5
        assert abs((box.y0 + box.y1) / 2 * H - (y + side / 2)) <= 1.5
        assert 4 <= (box.x1 - box.x0) * W <= 9 and 4 <= (box.y1 - box.y0) * H <= 9
        assert 0.5 * side * side / (W * H) <= box.area <= 2 * side * side / (W * H)
        assert motion_score(f, min_area=0.002) >= 0.5


@pytest.mark.parametrize("value", [20.0, 240.0])
def test_large_object_is_motion_not_a_lighting_change(value):
    rng = np.random.default_rng(9)
    scene, model = background(), MotionModel()
    for i in range(8):
        model.push(i / FPS, frame(scene, rng))
    for k in range(8):  # a band over 40 % of the picture sweeps in
        near = scene.copy()
        near[:, 5 + 3 * k : 5 + 3 * k + 64] = value
        f = model.push((8 + k) / FPS, frame(near, rng))
        assert not f.global_change and len(f.boxes) == 1 and 0.35 <= f.moving <= 0.45, k


def person(scene: np.ndarray, cx: float, value: float = 35.0) -> np.ndarray:
    """A 14×36 px dark ellipse ("person", 3.5 % of the frame) centred at x = cx."""
    out = scene.copy()
    cv2.ellipse(out, (round(cx), 50), (7, 18), 0, 0, 360, value, -1)
    return out


def test_person_walks_in_stands_still_and_leaves():
    rng = np.random.default_rng(6)
    scene, model = background(), MotionModel()
    t, scores_present, after = 0.0, [], []
    for _ in range(16):  # 2 s empty
        model.push(t, frame(scene, rng))
        t += 1 / FPS
    for k in range(12):  # walks in from the left edge in 1.5 s
        model.push(t, frame(person(scene, -7 + 7 * k), rng))
        t += 1 / FPS
    for k in range(80):  # stands (swaying ±1 px) for 10 s
        f = model.push(t, frame(person(scene, 77 + (1 if k % 4 < 2 else -1) * (k % 2)), rng))
        scores_present.append(motion_score(f, min_area=0.01))
        t += 1 / FPS
    for k in range(12):  # walks out to the right in 1.5 s
        model.push(t, frame(person(scene, 84 + 8 * k), rng))
        t += 1 / FPS
    gone = t
    for _ in range(24):
        f = model.push(t, frame(scene, rng))
        after.append((t - gone, motion_score(f, min_area=0.01)))
        t += 1 / FPS
    assert np.mean(np.array(scores_present) >= 0.5) >= 0.8
    assert all(s < 0.5 for dt, s in after if dt >= 1.0)


def test_parked_object_becomes_background():
    rng = np.random.default_rng(7)
    scene, model = background(), MotionModel()
    model.push(0.0, frame(scene, rng))
    parked = with_square(scene, 60, 30, 20, 230.0)
    seen = [model.push(i / FPS, frame(parked, rng)).boxes != () for i in range(1, 8 * 180)]
    assert all(seen[: 8 * 20])  # foreground for (at least) 20 s
    assert not any(seen[8 * 150 :])  # background after 2.5 min


def test_no_ghost_where_a_still_object_stood():
    # Something stands perfectly still for 15 s (less than absorb_s) and goes: the background never learned
    # it, so nothing is left behind (the old running average, learning slowly under it, left a ghost).
    rng = np.random.default_rng(11)
    scene, model = background(), MotionModel()
    for i in range(16):
        model.push(i / FPS, frame(scene, rng))
    block = with_square(scene, 60, 30, 16, 225.0)
    present = [motion_score(model.push((16 + i) / FPS, frame(block, rng)), min_area=0.001) for i in range(8 * 8)]
    saved = json.loads(json.dumps(model.state()))  # mid-way, with the stillness timer running: exact resume
    assert max(np.frombuffer(__import__("base64").b64decode(saved["still"]["data"]), "<u2")) >= 5 * 64
    twin, later = MotionModel.from_state(saved), [frame(block, rng) for _ in range(8 * 7)]
    for i, img in enumerate(later):
        f = model.push((16 + 8 * 8 + i) / FPS, img)
        assert f == twin.push((16 + 8 * 8 + i) / FPS, img)
        present.append(motion_score(f, min_area=0.001))
    assert twin.state() == model.state()
    assert all(s >= 0.5 for s in present)  # foreground all along
    gone = (16 + 8 * 15) / FPS
    after = [(k / FPS, model.push(gone + k / FPS, frame(scene, rng))) for k in range(8 * 5)]
    assert all(f.boxes == () for dt, f in after if dt >= 1.0), [(dt, f.boxes) for dt, f in after if f.boxes]
    assert all(motion_score(f, min_area=0.001) < 0.5 for dt, f in after)  # in fact not even at once


def test_stopped_object_near_moving_one_is_not_absorbed_while_it_moves():
    # A parked block next to a swaying one (one group): the group is not still, so neither is absorbed.
    rng = np.random.default_rng(12)
    scene, model = background(), MotionModel(absorb_s=5.0)
    model.push(0.0, frame(scene, rng))
    for i in range(1, 8 * 12):
        sway = with_square(with_square(scene, 60, 30, 12, 230.0), 76 + 3 * (i % 2), 30, 8, 30.0)
        f = model.push(i / FPS, frame(sway, rng))
    assert f.mask[30:42, 60:72].all()  # still foreground after 12 s (> absorb_s)
    for i in range(8 * 12, 8 * 20):  # the swaying block goes; the parked one is absorbed after ~5 s
        f = model.push(i / FPS, frame(with_square(scene, 60, 30, 12, 230.0), rng))
    assert f.boxes == ()


def test_a_ghost_is_absorbed_in_seconds_though_people_keep_passing_it():
    """The first frame holds a bright square that is gone from the next one: the background learned it,
    so its place reads as foreground, a ghost. Every 8 s a dark block passes just below it for 2 s (one
    group with it, so the group is never still for ``absorb_s``). The frame shows none of the square's
    outline that the background has: a ghost, absorbed after ``ghost_absorb_s`` of stillness, before the
    first passer. With ``ghost_absorb_s`` as long as ``absorb_s`` (the rule for real objects) it is
    still there after a minute."""

    def run(model: MotionModel) -> dict[float, float]:
        rng = np.random.default_rng(21)
        scene = background()
        model.push(0.0, frame(with_square(scene, 60, 30, 20, 230.0), rng))
        ghost_seen: dict[float, float] = {}
        for i in range(1, 8 * 60):
            t = i / FPS
            img = scene
            if t % 8.0 >= 6.0:  # a passer-by walks left to right just below the ghost
                x = int(20 + (t % 8.0 - 6.0) * 50)
                img = with_square(scene, x, 52, 10, 30.0)
            f = model.push(t, frame(img, rng))
            ghost_seen[t] = float(f.mask[32:48, 62:78].mean()) / 255.0
        return ghost_seen

    fast = run(MotionModel())
    assert fast[1.0] > 0.9  # at first the ghost reads as foreground
    assert fast[5.875] < 0.1  # absorbed before the first passer (6 s)
    assert max(v for t, v in fast.items() if t >= 6.0) < 0.1  # and stays gone
    slow = run(MotionModel(ghost_absorb_s=30.0))
    assert slow[59.875] > 0.9  # the passers-by keep a ghost that waits for absorb_s


def test_zone():
    full = zone_mask([(0, 0), (1, 0), (1, 1), (0, 1)], W, H)
    assert full is not None and full.all() and full.shape == (H, W)
    left = zone_mask([[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]], W, H)
    assert left is zone_mask(((0, 0), (0.5, 0), (0.5, 1), (0, 1)), W, H)  # cached
    assert left[:, : W // 2 - 1].all() and not left[:, W // 2 + 1 :].any()
    assert zone_mask(None, W, H) is None
    rng = np.random.default_rng(8)
    scene, model = background(), MotionModel()
    model.push(0.0, frame(scene, rng))
    f = model.push(1 / FPS, frame(with_square(scene, 120, 30, 12, 240.0), rng))  # right half
    assert motion_score(f, min_area=0.005) >= 0.5
    assert motion_score(f, min_area=0.005, zone=left) == 0.0
    assert motion_score(f, min_area=0.005, zone=full) == motion_score(f, min_area=0.005)


def test_score_threshold_is_exact():
    mask = np.zeros((H, W), np.uint8)
    mask[:2, :18] = 255  # 36 px
    area = 36 / (W * H)
    f = MotionFrame(0.0, (MotionBox(0, 0, 18 / W, 2 / H, area),), area, False, mask)
    assert motion_score(f, min_area=area) == 0.5
    assert motion_score(f, min_area=math.nextafter(area, 1)) < 0.5
    assert motion_score(f, min_area=area / 4) == 1.0
    assert motion_score(MotionFrame(0.0, (), area, True, mask), min_area=area) == 0.0


def scripted(i: int, rng: np.random.Generator, scene: np.ndarray) -> np.ndarray:
    lit = scene + (25 if i >= 70 else 0)
    return frame(with_square(lit, 10 + 2 * (i % 60), 20 + (i // 60) * 30, 10, 230.0) if i % 40 > 5 else lit, rng)


def test_state_round_trip_is_exact():
    scene = background()
    frames = [scripted(i, np.random.default_rng(100 + i), scene) for i in range(100)]
    times = [i / FPS + (0.03 if i % 3 == 0 else 0.0) for i in range(100)]  # uneven steps
    model = MotionModel(sensitivity=0.6, learn_s=3.0)
    for i in range(50):
        model.push(times[i], frames[i])
    saved = json.loads(json.dumps(model.state()))
    resumed = MotionModel.from_state(saved)
    assert resumed.state() == model.state()
    out_a = [model.push(times[i], frames[i]) for i in range(50, 100)]
    out_b = [resumed.push(times[i], frames[i]) for i in range(50, 100)]
    assert out_a == out_b
    assert any(f.boxes for f in out_a) and any(f.global_change for f in out_a)
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(out_a, out_b))
    assert resumed.state() == model.state()
    fresh = MotionModel.from_state(json.loads(json.dumps(MotionModel().state())))  # before any frame
    assert fresh.push(0.0, frames[0]).boxes == ()


def test_bad_input():
    model = MotionModel()
    g = np.zeros((H, W), np.uint8)
    for bad, word in [
        (g.astype(np.float32), "uint8"),
        (np.zeros((H, W, 3), np.uint8), "2-D"),
        (g.tolist(), "numpy array"),
        (np.zeros((4, W), np.uint8), "8×8"),
    ]:
        with pytest.raises(MotionError, match=word):
            model.push(0.0, bad)
    for t in (float("nan"), float("inf"), "1", True):
        with pytest.raises(MotionError, match="finite"):
            model.push(t, g)
    model.push(1.0, g)
    model.push(1.0, g)  # the same time again is allowed
    with pytest.raises(MotionError, match="backwards"):
        model.push(0.5, g)
    with pytest.raises(ValueError):  # MotionError is a ValueError too
        model.push(0.5, g)
    resized = model.push(2.0, np.zeros((H // 2, W // 2), np.uint8))  # another size: a fresh background
    assert resized.global_change and resized.mask.shape == (H // 2, W // 2)
    for kw in ({"sensitivity": 1.5}, {"learn_s": 0}, {"min_blob": -0.1}, {"max_moving": 0}, {"learn_s": math.nan}):
        with pytest.raises(MotionError):
            MotionModel(**kw)
    with pytest.raises(MotionError):
        MotionBox(0.5, 0.1, 0.4, 0.2, 0.01)
    with pytest.raises(MotionError):
        MotionBox(0.1, 0.1, 1.2, 0.2, 0.01)
    with pytest.raises(MotionError):
        zone_mask([(0, 0), (1, 1)], W, H)
    with pytest.raises(MotionError):
        zone_mask([(0, 0), (1, 0), (2, 1)], W, H)
    f = model.push(3.0, np.zeros((H // 2, W // 2), np.uint8))
    with pytest.raises(MotionError, match="shape"):
        motion_score(f, min_area=0.01, zone=zone_mask([(0, 0), (1, 0), (1, 1)], W, H))
    with pytest.raises(MotionError):
        motion_score(f, min_area=0.0)


def test_bad_state():
    model = MotionModel()
    model.push(0.0, np.full((H, W), 100, np.uint8))
    good = json.loads(json.dumps(model.state()))

    def broken(**changes):
        s = json.loads(json.dumps(good))
        for key, value in changes.items():
            if key.startswith("bg_"):
                s["background"][key[3:]] = value
            else:
                s[key] = value
        return s

    bads = [
        [],
        broken(version=99),
        broken(params={"sensitivity": 7}),
        broken(params={"colour": 1}),
        broken(gain="x"),
        broken(t=None),
        broken(t=math.inf),
        broken(background=None),
        broken(bg_dtype="uint8"),
        broken(bg_shape=[H, W, 1]),
        broken(bg_shape=[H, W + 1]),
        broken(bg_data="%%%"),
        broken(bg_data=good["background"]["data"][:-8]),
        broken(background={"shape": [H, W]}),
        broken(recent=None),
        broken(still={**good["still"], "shape": [W, H]}),
        broken(still={**good["still"], "dtype": "float32"}),
        {k: v for k, v in good.items() if k != "still"},
    ]
    for bad in bads:
        with pytest.raises(MotionStateError) as info:
            MotionModel.from_state(bad)  # type: ignore[arg-type]
        assert isinstance(info.value, LongwatchError) and isinstance(info.value, ValueError)
    s = broken()
    s["background"]["data"] = __import__("base64").b64encode(np.full((H, W), np.nan, "<f4").tobytes()).decode()
    with pytest.raises(MotionStateError, match="grey levels"):
        MotionModel.from_state(s)
    # A state of the earlier model (version 1: a background only, fg_learn_s) is still taken.
    v1 = {k: v for k, v in good.items() if k not in ("recent", "still")}
    v1["version"] = 1
    v1["params"] = {**{k: v for k, v in good["params"].items() if k not in ("absorb_s", "still_s")}, "fg_learn_s": 60.0}
    old = MotionModel.from_state(v1)
    assert old.state()["background"] == good["background"] and old.push(1.0, np.full((H, W), 100, np.uint8)).boxes == ()


def thumbnails(path: str, fps: float = 8.0, width: int = 160):
    """(t, grey thumbnail) of the first frame of each 1/fps slot, by stream time (PTS)."""
    last = None
    with av.open(path) as container:
        for fr in container.decode(video=0):
            t = float(fr.pts * fr.time_base)
            slot = math.floor(t * fps + 1e-6)
            if slot == last:
                continue
            last = slot
            grey = fr.to_ndarray(format="gray")
            h, w = grey.shape
            yield t, cv2.resize(grey, (width, round(width * h / w)), interpolation=cv2.INTER_AREA)


def runs(times: list[float], on: list[bool], gap: float = 1.0) -> list[tuple[float, float]]:
    """Runs of ``on`` frames as (first on time, first off time after), merged over gaps ≤ ``gap`` s."""
    out: list[list[float]] = []
    for i, (t, o) in enumerate(zip(times, on)):
        if not o:
            continue
        end = times[i + 1] if i + 1 < len(times) else t
        if out and t - out[-1][1] <= gap:
            out[-1][1] = end
        else:
            out.append([t, end])
    return [(a, b) for a, b in out]


def test_synthetic_motion_clip(tmp_path):
    from sample_videos.make_synthetic import motion_clip

    spec = motion_clip(tmp_path / "motion.mp4")
    model = MotionModel()
    times, on, frames = [], [], []
    for t, thumb in thumbnails(spec.path):
        f = model.push(t, thumb)
        times.append(t)
        frames.append(f)
        on.append(motion_score(f, min_area=0.001) >= 0.5)
    assert 155 <= len(times) <= 165 and frames[0].mask.shape == (120, 160)
    found = runs(times, on)
    assert len(found) == len(spec.events), (found, spec.events)
    for (s, e), (ts, te) in zip(found, spec.events):
        assert abs(s - ts) <= 0.5 and abs(e - te) <= 0.5, (found, spec.events)
    step = [f for f in frames if 3.0 <= f.t <= 5.0]  # the +35 step at 4 s
    assert any(f.global_change for f in step) and not any(f.boxes for f in step)
