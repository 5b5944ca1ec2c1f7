"""The detector's onnxruntime engine: the darknet files as an ONNX graph (model/darknet.py), decoded as
OpenCV's region layer decodes them, give OpenCV DNN's rows, boxes and scores on real frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from longwatch.model import darknet
from longwatch.model.detector import ONNX_CACHE_SUBDIR, YoloDetector
from longwatch.model.weights import DetectorWeights
from longwatch.pipeline.config import Settings
from longwatch.pipeline.errors import ModelError


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> DetectorWeights:
    return DetectorWeights.locate(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def engines(weights) -> tuple[YoloDetector, YoloDetector]:
    return YoloDetector(weights, engine="opencv"), YoloDetector(weights, engine="onnxruntime")


@pytest.fixture(scope="module")
def street_frames(demo_clip) -> list[np.ndarray]:
    """Every 25th frame of the demo clip (real street footage with people, bikes and cars), RGB."""
    cap = cv2.VideoCapture(str(demo_clip))
    out = []
    n = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        if n % 25 == 0:
            out.append(np.ascontiguousarray(bgr[:, :, ::-1]))
        n += 1
    cap.release()
    assert len(out) >= 8
    return out


def _same(a, b, tol: float = 1e-4) -> None:
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        assert [d.label for d in x] == [d.label for d in y], f"frame {i}: {x} vs {y}"
        for p, q in zip(x, y):
            assert abs(p.score - q.score) < tol, (i, p, q)
            assert np.allclose(p.box, q.box, atol=tol), (i, p, q)


def test_onnxruntime_rows_equal_opencv_region_rows(weights, street_frames):
    """The raw forward pass: onnxruntime's maps through region_rows equal OpenCV DNN's region-layer rows,
    for the rectangular input, the stock square one and a batch."""
    cv_det, ort_det = YoloDetector(weights, engine="opencv"), YoloDetector(weights, engine="onnxruntime")
    kept = 0
    for W, H, n in ((320, 192, 1), (416, 416, 1), (320, 192, 6)):
        imgs = [cv2.resize(f, (W, H), interpolation=cv2.INTER_AREA) for f in street_frames[-n:]]
        blob = cv2.dnn.blobFromImages(imgs, 1.0 / 255.0, (W, H), swapRB=False, crop=False)
        a, b = cv_det._infer(blob), ort_det._infer(blob)
        assert a.shape == b.shape == (n, 3 * (W // 32) * (H // 32) * 5, 85)
        assert np.abs(a[..., :5] - b[..., :5]).max() < 1e-4
        # class scores: OpenCV zeroes those at or below 0.2; where one engine is a hair from that line the
        # other may zero it, so compare where both kept one, and require nearly all kept by both
        ka, kb = a[..., 5:] > 0, b[..., 5:] > 0
        assert (ka ^ kb).sum() <= max(1, ka.sum() // 100)
        both = ka & kb
        if both.any():
            assert np.abs(a[..., 5:][both] - b[..., 5:][both]).max() < 1e-4
        kept += int(both.sum())
    assert kept >= 5, "the street frames should give class scores above the floor"


def test_engines_give_the_same_detections_with_regions(engines, street_frames):
    """Whole frames and motion-region crops (different input shapes, batched): the same boxes."""
    cv_det, ort_det = engines
    regions = [[(0.05, 0.3, 0.35, 0.9), (0.6, 0.4, 0.8, 0.95)]] * len(street_frames)
    a = cv_det.detect(street_frames, regions=regions)
    b = ort_det.detect(street_frames, regions=regions)
    assert sum(map(len, a)) >= 10, "the street clip should give boxes"
    _same(a, b)
    assert ort_det.frames_done == cv_det.frames_done and ort_det.crops_done == cv_det.crops_done > 0


def test_the_graph_is_cached_by_content(weights, tmp_path):
    """Built once and kept under the data dir; another cfg (other anchor masks) is another file; a cache
    folder that cannot be written still gives a working detector."""
    cache = tmp_path / ONNX_CACHE_SUBDIR
    YoloDetector(weights, cache_dir=cache)
    files = sorted(cache.glob("darknet-*.onnx"))
    assert len(files) == 1 and files[0].stat().st_size > 30_000_000
    stamp = files[0].stat().st_mtime_ns
    YoloDetector(weights, cache_dir=cache)
    assert sorted(cache.glob("darknet-*.onnx")) == files and files[0].stat().st_mtime_ns == stamp
    YoloDetector(weights, cache_dir=cache, tiny_masks=None)
    assert len(list(cache.glob("darknet-*.onnx"))) == 2
    assert not list(cache.glob(".*")), "no temporary file left behind"
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("x")
    det = YoloDetector(weights, cache_dir=blocked / "onnx")
    assert det.detect([np.full((96, 160, 3), 127, np.uint8)]) == [[]]


def test_a_damaged_cached_graph_is_written_again(weights, tmp_path, caplog):
    cache = tmp_path / "onnx"
    YoloDetector(weights, cache_dir=cache)
    (kept,) = cache.glob("darknet-*.onnx")
    good = kept.read_bytes()
    kept.write_bytes(good[: len(good) // 3])  # e.g. a disk that lost the end of it
    det = YoloDetector(weights, cache_dir=cache)
    assert "does not load" in caplog.text
    assert kept.read_bytes() == good
    assert det.detect([np.full((96, 160, 3), 127, np.uint8)]) == [[]]


def test_backend_keeps_the_graph_under_its_data_dir(tmp_path):
    from longwatch.model.backend import load_backend
    from longwatch.pipeline.events import default_events

    DetectorWeights.locate(tmp_path)
    backend = load_backend("detector", default_events(), data_dir=str(tmp_path), engine="onnxruntime")
    assert backend.detector.engine == "onnxruntime"
    assert len(list((tmp_path / ONNX_CACHE_SUBDIR).glob("darknet-*.onnx"))) == 1


def _cfg(weights: DetectorWeights) -> str:
    return Path(weights.cfg).read_text()


def test_converter_errors_name_what_is_wrong(weights):
    cfg = _cfg(weights)
    data = Path(weights.weights).read_bytes()
    with pytest.raises(ModelError, match="end early"):
        darknet.onnx_model(cfg, data[: len(data) // 2])
    with pytest.raises(ModelError, match="cfg and weights differ"):
        darknet.onnx_model(cfg, data + b"\0" * 400)
    with pytest.raises(ModelError, match=r"\[shortcut\] is not supported"):
        darknet.onnx_model(cfg.replace("[upsample]", "[shortcut]"), data)
    with pytest.raises(ModelError, match="activation 'mish'"):
        darknet.onnx_model(cfg.replace("activation=leaky", "activation=mish", 1), data)
    with pytest.raises(ModelError, match=r"\[net\]"):
        darknet.parse_cfg("[convolutional]\nfilters=1\n")
    with pytest.raises(ModelError, match="line 2"):
        darknet.parse_cfg("[net]\nthis line is not a key value pair\n")
    with pytest.raises(ModelError, match="no \\[yolo\\] layer"):
        darknet.yolo_heads("[net]\nwidth=32\n[maxpool]\nsize=2\nstride=2\n")
    with pytest.raises(ModelError, match="too short"):
        darknet.onnx_model(cfg, b"\0" * 8)


def test_unknown_engine_is_a_typed_error(weights):
    with pytest.raises(ModelError, match="unknown detector engine 'tensorrt'.*onnxruntime, opencv"):
        YoloDetector(weights, engine="tensorrt")


def test_engine_setting_and_its_environment_override(monkeypatch):
    from pydantic import ValidationError

    assert Settings().detection.engine == "onnxruntime"
    monkeypatch.setenv("LONGWATCH_DETECTION__ENGINE", "opencv")
    assert Settings().detection.engine == "opencv"
    monkeypatch.setenv("LONGWATCH_DETECTION__ENGINE", "openvino")
    with pytest.raises(ValidationError, match="engine"):
        Settings()
    from longwatch.actors.model_pool import pool_settings

    monkeypatch.delenv("LONGWATCH_DETECTION__ENGINE")
    assert pool_settings("detector", Settings())["options"]["engine"] == "onnxruntime"


def test_region_rows_checks_its_inputs():
    head = darknet.YoloHead(np.array([[10.0, 14.0], [23.0, 27.0]]), classes=2)
    raw = np.zeros((1, 2 * 7, 3, 4), np.float32)
    rows = darknet.region_rows([raw], [head], 128, 96)
    assert rows.shape == (1, 3 * 4 * 2, 7)
    # zero logits: centre of each cell, anchor-sized boxes, objectness 0.5, class 0.25 (above 0.2: kept)
    assert np.allclose(rows[0, 0, :5], [0.5 / 4, 0.5 / 3, 10 / 128, 14 / 96, 0.5])
    assert np.allclose(rows[0, 1, 2:4], [23 / 128, 27 / 96]) and np.allclose(rows[..., 5:], 0.25)
    with pytest.raises(ModelError, match="channels"):
        darknet.region_rows([np.zeros((1, 13, 3, 4), np.float32)], [head], 128, 96)
    with pytest.raises(ModelError, match="2 network outputs for 1 yolo heads"):
        darknet.region_rows([raw, raw], [head], 128, 96)
    with pytest.raises(ModelError, match="anchors"):
        darknet.YoloHead(np.zeros((0, 2)), classes=2)


def test_onnxruntime_threads_sleep_between_calls(weights):
    """The session is built with one inter-op thread and no spinning (a spinning pool burns the cores
    the stream workers need); threads=1 gives a single intra-op thread."""
    opts = YoloDetector(weights, threads=1).session.get_session_options()
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert YoloDetector(weights, engine="opencv").session is None
