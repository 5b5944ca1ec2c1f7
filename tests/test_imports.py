"""What each kind of process imports: the package's names load on first use (``pipeline/__init__.py``),
so the model replica and the controller start without the decoder (PyAV) they never use."""

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


def test_every_name_of_the_package_resolves_to_its_module():
    import longwatch.pipeline as pipeline
    from longwatch.pipeline import errors, source

    assert pipeline.Source is source.Source and pipeline.ConfigError is errors.ConfigError
    assert all(getattr(pipeline, name) is not None for name in pipeline.__all__)
    assert set(pipeline.__all__) <= set(dir(pipeline))
    with pytest.raises(AttributeError, match="no attribute 'Sauce'"):
        pipeline.Sauce  # noqa: B018
