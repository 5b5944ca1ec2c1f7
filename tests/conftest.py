"""Shared fixtures: real footage (skipped where absent) and synthetic clips made once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["redis_fixtures"]

ROOT = Path(__file__).resolve().parents[1]
FOOTAGE = Path(os.environ.get("LONGWATCH_FOOTAGE", ROOT.parent / "shared" / "footage"))


def footage_file(name: str) -> Path:
    path = FOOTAGE / name
    if not path.is_file():
        pytest.skip(f"real footage {name} is not at {FOOTAGE} (it lives in the team's shared/ folder, not in the repo)")
    return path


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """The standard synthetic set (known frame times, events, VFR, a PTS jump), made once."""
    from sample_videos.make_synthetic import standard_set

    return standard_set(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture
def person_clip() -> Path:
    return footage_file("one-by-one-person-detection.mp4")
