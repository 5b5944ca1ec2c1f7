"""The one interface every model backend implements, and the factory the model pool builds them with.

A backend scores the events of an events file whose ``backend`` is its own kind, on batches of clips
from any streams:

* ``event_names``: the events it scores (the others belong to other backends);
* ``score(clips)``: per clip, ``{event: per-frame scores}`` aligned with ``clip.times`` (float64, 0..1).

The backends today are the CPU detector (:class:`~.detector.DetectorBackend`, kind ``detector``) and the
VLM (:class:`~.qwen_vl.QwenVLBackend`, kind ``qwen2_5_vl``); the motion backend will implement the same
protocol. The Ray Serve pool (``actors/model_pool.py``) holds one backend per replica, built by
:func:`load_backend`, and batches clips across streams into ``score``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from longwatch.pipeline.errors import ConfigError
from longwatch.pipeline.events import EventsSpec

if TYPE_CHECKING:
    from longwatch.pipeline.types import Clip

DETECTOR = "detector"
QWEN2_5_VL = "qwen2_5_vl"
KINDS = (DETECTOR, QWEN2_5_VL)


@runtime_checkable
class Backend(Protocol):
    """Scores its events on clips. Implemented by the detector and the VLM backends (motion will follow)."""

    @property
    def event_names(self) -> list[str]:
        """The events this backend scores, in events-file order."""
        ...

    def score(self, clips: Sequence[Clip]) -> list[dict[str, np.ndarray]]:
        """Per clip ``{event: per-frame scores aligned with clip.times}`` (float64, 0..1), in input order.
        Clips may come from any streams and be of any sizes; no events → an empty dict per clip."""
        ...


def load_backend(kind: str, events: EventsSpec, **options: Any) -> Backend:
    """Build the backend of ``kind`` for ``events`` (it keeps the events of its kind only).

    ``detector``: ``options`` go to :class:`~.detector.DetectorBackend` (``data_dir``, detector keywords).
    ``qwen2_5_vl``: ``options`` go to :meth:`~.qwen_vl.QwenVLBackend.load` (``model``, ``dtype``, ``attn``,
    ``device``, ``local_files_only``, ``strategy``, ``ground``, ``max_batch_tokens``, ``max_batch_clips``).
    Imports are lazy: a detector-only process never imports torch.
    """
    if kind == DETECTOR:
        from .detector import DetectorBackend

        return DetectorBackend(events, **options)
    if kind == QWEN2_5_VL:
        from .qwen_vl import QwenVLBackend

        options = dict(options)
        return QwenVLBackend.load(options.pop("model"), events=events, **options)
    raise ConfigError(f"unknown model backend {kind!r}; known: {', '.join(KINDS)}")
