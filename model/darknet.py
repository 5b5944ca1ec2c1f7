"""Darknet YOLO files for onnxruntime: the network as an ONNX graph, and its ``[yolo]`` heads decoded as
OpenCV's region layer decodes them.

:func:`onnx_model` reads a darknet ``.cfg`` (text) and ``.weights`` (bytes) and writes the same network
as ONNX (opset 13): each convolution with its batch norm folded in (OpenCV's ε = 1e-6), leaky ReLU
(0.1), max pools (a stride-1 pool pads right and bottom, as darknet does), nearest upsampling, routes;
one graph output per ``[yolo]`` head, its raw (N, A·(5 + classes), h, w) map. Layers other than those
YOLOv3(-tiny) uses raise :class:`~longwatch.pipeline.errors.ModelError` naming the layer.

:func:`region_rows` turns those raw maps into the rows OpenCV DNN's region layer gives for the same
network, (N, Σ h·w·A, 5 + classes), cell by cell and anchor by anchor: centre x, y and width, height as
fractions of the network input, objectness, and per class objectness × class probability, zeroed at or
below :data:`REGION_THRESH`. So :class:`~.detector.YoloDetector` decodes either engine's output with one
code path; on real frames the two agree to about 1e-4 (tests/test_darknet.py).

Building the graph needs the ``onnx`` package (about a second to import), so the detector keeps the
bytes in a cache file next to the weights (:func:`cached_onnx_model`) and later starts need only
onnxruntime.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from longwatch.pipeline.errors import ModelError

log = logging.getLogger(__name__)

BN_EPS = 1e-6  # OpenCV's darknet importer folds batch norm with this ε
LEAKY_SLOPE = 0.1
REGION_THRESH = 0.2  # OpenCV's region layer zeroes class scores at or below this
OPSET = 13
CONVERTER_VERSION = 1  # part of the cache key: bump when the graph this module writes changes
INPUT_NAME = "input"


def parse_cfg(text: str) -> list[dict[str, str]]:
    """A darknet cfg as a list of sections, each ``{"type": name, key: value, ...}`` (comments dropped)."""
    sections: list[dict[str, str]] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ModelError(f"darknet cfg line {n}: unclosed section header {raw.strip()!r}")
            sections.append({"type": line[1:-1].strip()})
        elif "=" in line and sections:
            key, value = line.split("=", 1)
            sections[-1][key.strip()] = value.strip()
        else:
            raise ModelError(f"darknet cfg line {n}: expected [section] or key=value, got {raw.strip()!r}")
    if not sections or sections[0]["type"] not in ("net", "network"):
        raise ModelError("darknet cfg does not start with a [net] section")
    return sections


@dataclass(frozen=True, slots=True)
class YoloHead:
    """One ``[yolo]`` layer: its anchors (A, 2) in network-input pixels, class count, and ``scale_x_y``."""

    anchors: np.ndarray
    classes: int
    scale_xy: float = 1.0

    def __post_init__(self) -> None:
        a = np.asarray(self.anchors, dtype=np.float32)
        if a.ndim != 2 or a.shape[1] != 2 or len(a) == 0:
            raise ModelError(f"a yolo head needs (A, 2) anchors, got shape {a.shape}")
        if self.classes < 1 or self.scale_xy <= 0:
            raise ModelError(f"a yolo head needs classes >= 1 and scale_x_y > 0, got {self.classes}, {self.scale_xy}")
        object.__setattr__(self, "anchors", a)


def yolo_heads(cfg_text: str) -> list[YoloHead]:
    """The cfg's ``[yolo]`` heads, in order (the order of :func:`onnx_model`'s outputs)."""
    heads = []
    for sec in parse_cfg(cfg_text)[1:]:
        if sec["type"] != "yolo":
            continue
        try:
            anchors = np.array([float(v) for v in sec["anchors"].split(",")], np.float32).reshape(-1, 2)
            mask = [int(v) for v in sec["mask"].split(",")] if "mask" in sec else list(range(len(anchors)))
            heads.append(YoloHead(anchors[mask], int(sec["classes"]), float(sec.get("scale_x_y", 1.0))))
        except (KeyError, ValueError, IndexError) as exc:
            raise ModelError(f"darknet cfg: a [yolo] section is malformed ({exc!r})") from exc
    if not heads:
        raise ModelError("darknet cfg has no [yolo] layer")
    return heads


def onnx_model(cfg_text: str, weights: bytes) -> bytes:
    """The darknet network (``cfg_text`` + the ``.weights`` file's bytes) as a serialised ONNX model with
    one float input ``input`` (N, 3, H, W; RGB in [0, 1]) and one output per ``[yolo]`` head."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    sections = parse_cfg(cfg_text)
    raw = np.frombuffer(weights, np.uint8)
    if raw.size < 20:
        raise ModelError(f"darknet weights too short ({raw.size} bytes)")
    major, minor, _revision = (int(v) for v in np.frombuffer(raw[:12].tobytes(), np.int32))
    header = 12 + (8 if major * 10 + minor >= 2 else 4)
    params = np.frombuffer(raw[header:].tobytes()[: (raw.size - header) // 4 * 4], np.float32)
    pos = 0

    def take(n: int) -> np.ndarray:
        nonlocal pos
        if pos + n > params.size:
            raise ModelError(f"darknet weights end early: the cfg needs more than {params.size} values")
        out = params[pos : pos + n]
        pos += n
        return out

    nodes, inits = [], []
    outputs: list[tuple[str, int]] = []  # per layer: (tensor name, channels)
    heads: list[tuple[str, int]] = []
    cur, channels = INPUT_NAME, 3
    for i, sec in enumerate(sections[1:]):
        kind, name = sec["type"], f"l{i}"
        if kind == "convolutional":
            filters, size = int(sec["filters"]), int(sec["size"])
            stride = int(sec.get("stride", 1))
            pad = size // 2 if int(sec.get("pad", 0)) else int(sec.get("padding", 0))
            if int(sec.get("groups", 1)) != 1:
                raise ModelError(f"darknet layer {i}: grouped convolutions are not supported")
            if int(sec.get("batch_normalize", 0)):
                bias, scale, mean, var = (take(filters) for _ in range(4))
            else:
                bias = take(filters)
            w = take(filters * channels * size * size).reshape(filters, channels, size, size)
            if int(sec.get("batch_normalize", 0)):
                g = scale / np.sqrt(var + BN_EPS)
                w, bias = w * g[:, None, None, None], bias - mean * g
            inits += [
                numpy_helper.from_array(np.ascontiguousarray(w, np.float32), name + "_w"),
                numpy_helper.from_array(np.ascontiguousarray(bias, np.float32), name + "_b"),
            ]
            act = sec.get("activation", "linear")
            conv_out = name if act == "linear" else name + "_conv"
            nodes.append(
                helper.make_node(
                    "Conv",
                    [cur, name + "_w", name + "_b"],
                    [conv_out],
                    kernel_shape=[size, size],
                    strides=[stride, stride],
                    pads=[pad] * 4,
                )
            )
            if act == "leaky":
                nodes.append(helper.make_node("LeakyRelu", [conv_out], [name], alpha=LEAKY_SLOPE))
            elif act != "linear":
                raise ModelError(f"darknet layer {i}: activation {act!r} is not supported")
            cur, channels = name, filters
        elif kind == "maxpool":
            size, stride = int(sec["size"]), int(sec.get("stride", 1))
            extra = size - 1 if stride == 1 else 0  # darknet keeps a stride-1 pool's size: pad right/bottom
            nodes.append(
                helper.make_node(
                    "MaxPool",
                    [cur],
                    [name],
                    kernel_shape=[size, size],
                    strides=[stride, stride],
                    pads=[0, 0, extra, extra],
                )
            )
            cur = name
        elif kind == "upsample":
            s = float(sec.get("stride", 2))
            inits.append(numpy_helper.from_array(np.array([1, 1, s, s], np.float32), name + "_scales"))
            nodes.append(helper.make_node("Resize", [cur, "", name + "_scales"], [name], mode="nearest"))
            cur = name
        elif kind == "route":
            idx = [int(v) for v in sec["layers"].split(",")]
            idx = [j if j >= 0 else i + j for j in idx]
            if any(not 0 <= j < i for j in idx):
                raise ModelError(f"darknet layer {i}: route to a layer that does not precede it: {sec['layers']}")
            if len(idx) == 1:
                cur, channels = outputs[idx[0]]
            else:
                nodes.append(helper.make_node("Concat", [outputs[j][0] for j in idx], [name], axis=1))
                cur, channels = name, sum(outputs[j][1] for j in idx)
        elif kind == "yolo":
            heads.append((cur, channels))
        else:
            raise ModelError(f"darknet layer {i}: [{kind}] is not supported by the ONNX converter")
        outputs.append((cur, channels))
    if pos != params.size:
        raise ModelError(f"darknet weights hold {params.size} values but the cfg uses {pos}: cfg and weights differ")
    if not heads:
        raise ModelError("darknet cfg has no [yolo] layer")
    graph = helper.make_graph(
        nodes,
        "darknet",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", c, f"h{k}", f"w{k}"])
            for k, (n, c) in enumerate(heads)
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="longwatch")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


_built: dict[str, bytes] = {}  # graphs this process built (tests and benchmarks build several detectors)


def cached_onnx_model(
    cfg_text: str,
    weights_path: str | os.PathLike,
    cache_dir: str | os.PathLike | None,
    *,
    weights_sha256: str | None = None,
    rebuild: bool = False,
) -> bytes:
    """:func:`onnx_model`, kept in ``cache_dir`` (and in this process) under a name made of a sha256 of the
    cfg, the weights' sha256 and this converter's version, so a changed input is never served an old
    graph. ``weights_sha256``: the weights' hash where it is already verified (:class:`~.weights.
    DetectorWeights`), so a start that finds the graph reads no weights; None: hashed here. Written
    atomically; a directory that cannot be written only means the graph is built each start.
    ``rebuild``: build it again and replace what is kept (a cached file that does not load)."""
    data = None
    if weights_sha256 is None:
        data = Path(weights_path).read_bytes()
        weights_sha256 = hashlib.sha256(data).hexdigest()
    key = hashlib.sha256(f"{CONVERTER_VERSION}\n{cfg_text}\n{weights_sha256}".encode()).hexdigest()[:20]
    path = None if cache_dir is None else Path(cache_dir) / f"darknet-{key}.onnx"
    if path is not None and path.is_file() and not rebuild:
        return path.read_bytes()
    model = None if rebuild else _built.get(key)
    if model is None:
        model = _built[key] = onnx_model(cfg_text, data if data is not None else Path(weights_path).read_bytes())
    if path is not None:
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(model)
            tmp.replace(path)
        except OSError as exc:
            log.warning("could not keep the detector's ONNX graph in %s (%s); it is rebuilt each start", cache_dir, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()
    return model


def region_rows(
    outputs: Sequence[np.ndarray], heads: Sequence[YoloHead], width: int, height: int, thresh: float = REGION_THRESH
) -> np.ndarray:
    """The heads' raw maps (each (N, A·(5 + C), h, w)) as OpenCV's region-layer rows (N, Σ h·w·A, 5 + C)
    for a ``width × height`` network input (see the module doc)."""
    if len(outputs) != len(heads):
        raise ModelError(f"{len(outputs)} network outputs for {len(heads)} yolo heads")
    rows = []
    for raw, head in zip(outputs, heads):
        n, ch, h, w = raw.shape
        a, c = len(head.anchors), head.classes
        if ch != a * (5 + c):
            raise ModelError(f"a yolo head's map has {ch} channels, expected {a} × (5 + {c})")
        x = raw.reshape(n, a, 5 + c, h, w).transpose(0, 3, 4, 1, 2)  # (N, h, w, A, 5 + C)
        out = np.empty(x.shape, np.float32)
        s = head.scale_xy
        sig_xy = 1.0 / (1.0 + np.exp(-x[..., 0:2])) * s - (s - 1.0) / 2.0
        out[..., 0] = (np.arange(w, dtype=np.float32)[None, None, :, None] + sig_xy[..., 0]) / w
        out[..., 1] = (np.arange(h, dtype=np.float32)[None, :, None, None] + sig_xy[..., 1]) / h
        out[..., 2] = np.exp(x[..., 2]) * (head.anchors[:, 0] / width)
        out[..., 3] = np.exp(x[..., 3]) * (head.anchors[:, 1] / height)
        obj = 1.0 / (1.0 + np.exp(-x[..., 4]))
        out[..., 4] = obj
        probs = obj[..., None] / (1.0 + np.exp(-x[..., 5:]))
        probs[probs <= thresh] = 0.0
        out[..., 5:] = probs
        rows.append(out.reshape(n, h * w * a, 5 + c))
    return np.concatenate(rows, axis=1)
