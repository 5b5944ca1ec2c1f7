from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest

from longwatch.pipeline.timebase import (
    UNIX_EPOCH,
    StreamClock,
    clip_to_stream_seconds,
    parse_epoch,
    to_stream_seconds,
    to_utc,
)

TB = Fraction(1, 1000)


def test_times_come_from_pts_not_index():
    clock = StreamClock(nominal_dt=0.04)
    clock.begin_session(anchor_s=0.0, base_s=0.0)
    # Irregular PTS: the times must follow them exactly.
    got = [clock.time_of(p, TB)[0] for p in (0, 33, 100, 101, 250)]
    assert got == [0.0, 0.033, 0.1, 0.101, 0.25]


def test_first_frame_without_pts_is_estimated_then_pts_rule():
    clock = StreamClock(nominal_dt=0.04)
    clock.begin_session(anchor_s=0.0, base_s=0.0)
    t0, est0 = clock.time_of(None, TB)
    assert (t0, est0) == (0.0, True)
    t1, est1 = clock.time_of(40, TB)
    assert (t1, est1) == (0.04, False)
    assert clock.estimated == 1


def test_pts_going_backwards_reanchors_monotonic():
    clock = StreamClock(nominal_dt=0.1)
    clock.begin_session(anchor_s=0.0, base_s=0.0)
    times = [clock.time_of(p, TB)[0] for p in (0, 100, 200, 0, 100, 200)]
    assert times == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    assert clock.discontinuities == 1
    # Repeated PTS count as going backwards too.
    assert clock.time_of(300, TB)[0] == pytest.approx(0.6)
    assert clock.time_of(300, TB)[0] == pytest.approx(0.7)


def test_forward_jump_is_kept_as_a_real_gap():
    clock = StreamClock(nominal_dt=0.04)
    clock.begin_session(anchor_s=0.0, base_s=0.0)
    assert [clock.time_of(p, TB)[0] for p in (0, 40, 30040)] == [0.0, 0.04, 30.04]
    assert clock.discontinuities == 0


def test_new_session_never_goes_backwards():
    clock = StreamClock(nominal_dt=0.1)
    clock.begin_session(anchor_s=0.0, base_s=5.0)
    assert clock.time_of(5000, TB)[0] == 0.0
    assert clock.time_of(7000, TB)[0] == 2.0
    # Reconnect: the new session's PTS restart at 0 and its wall-clock anchor is (wrongly) earlier.
    clock.begin_session(anchor_s=1.0, base_s=0.0)
    assert clock.time_of(0, TB)[0] == pytest.approx(2.1)
    clock.begin_session(anchor_s=10.0, base_s=0.0)
    assert clock.time_of(500, TB)[0] == pytest.approx(10.5)
    assert clock.sessions == 3


def test_epochs_and_utc_round_trip():
    epoch = parse_epoch("2026-11-22T14:02:00Z")
    assert epoch == datetime(2026, 11, 22, 14, 2, tzinfo=UTC)
    assert parse_epoch("2026-11-22T14:02:00") == epoch  # naive = UTC
    assert parse_epoch(0) == UNIX_EPOCH and parse_epoch("86400") == UNIX_EPOCH + timedelta(days=1)
    assert parse_epoch(None) is None
    with pytest.raises(ValueError):
        parse_epoch("yesterday-ish")
    when = to_utc(epoch, 482.25)
    assert when == datetime(2026, 11, 22, 14, 10, 2, 250000, tzinfo=UTC)
    assert to_stream_seconds(epoch, when) == pytest.approx(482.25)
    with pytest.raises(ValueError):
        to_stream_seconds(epoch, datetime(2026, 1, 1))


def test_clip_relative_time_maps_back():
    assert clip_to_stream_seconds(120.5, 3.25) == 123.75
    with pytest.raises(ValueError):
        clip_to_stream_seconds(0.0, float("nan"))
