"""What each kind of process imports: the package's names load on first use (``pipeline/__init__.py``),
so the model replica and the controller start without the decoder (PyAV) they never use, and the
controller without OpenCV or Ray Serve."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_the_model_replica_imports_no_decoder():
    mods = _modules_after("import longwatch.model.detector, longwatch.pipeline.events")
    assert "longwatch.pipeline.events" in mods
    assert "av" not in mods and "longwatch.pipeline.source" not in mods


def test_the_controller_and_a_worker_without_pools_import_no_decoder_and_no_serve():
    """The controller's process starts stream workers and reads their status: no decoder, no OpenCV, no
    pipeline loop, no Ray Serve (each ~0.3-1.3 CPU-s, paid while everything else starts on two cores).
    A stream worker's class loads the same way; Serve is imported only where a pool is called."""
    pytest.importorskip("ray")
    mods = _modules_after("import longwatch.actors.controller, longwatch.actors.stream_worker")
    assert "longwatch.actors.stream_worker" in mods and "longwatch.pipeline.report" in mods
    heavy = {"av", "cv2", "longwatch.pipeline.worker", "longwatch.pipeline.source", "ray.serve", "onnxruntime"}
    assert not heavy & mods, heavy & mods


def test_every_name_of_the_package_resolves_to_its_module():
    import longwatch.pipeline as pipeline
    from longwatch.pipeline import errors, source

    assert pipeline.Source is source.Source and pipeline.ConfigError is errors.ConfigError
    assert all(getattr(pipeline, name) is not None for name in pipeline.__all__)
    assert set(pipeline.__all__) <= set(dir(pipeline))
    with pytest.raises(AttributeError, match="no attribute 'Sauce'"):
        pipeline.Sauce  # noqa: B018
