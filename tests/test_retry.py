"""The one retry policy (pipeline/retry.py): what is retried, how long, and that a stop cuts a wait."""

from __future__ import annotations

import threading

import pytest

from longwatch.pipeline.retry import Backoff, retry_call


class Flaky:
    def __init__(self, failures: int, exc: type[BaseException] = ConnectionError):
        self.failures, self.exc, self.calls = failures, exc, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc(f"failure {self.calls}")
        return "ok"


FAST = Backoff(initial_s=0.001, cap_s=0.002)


def test_transient_failures_are_retried_and_reported():
    seen: list[tuple[int, str]] = []
    fn = Flaky(2)
    assert (
        retry_call(fn, retry_on=ConnectionError, backoff=FAST, on_retry=lambda a, e, d: seen.append((a, str(e))))
        == "ok"
    )
    assert fn.calls == 3
    assert seen == [(1, "failure 1"), (2, "failure 2")]


def test_attempts_bound_the_calls_and_the_last_error_is_raised():
    fn = Flaky(10)
    with pytest.raises(ConnectionError, match="failure 3"):
        retry_call(fn, retry_on=ConnectionError, backoff=FAST, attempts=3)
    assert fn.calls == 3
    one = Flaky(10)
    with pytest.raises(ConnectionError, match="failure 1"):
        retry_call(one, retry_on=ConnectionError, backoff=FAST, attempts=1)
    assert one.calls == 1


def test_other_errors_are_never_retried():
    fn = Flaky(1, exc=FileNotFoundError)
    with pytest.raises(FileNotFoundError):
        retry_call(fn, retry_on=(ConnectionError, TimeoutError), backoff=FAST)
    assert fn.calls == 1


def test_deadline_ends_the_retries():
    fn = Flaky(10**9)
    with pytest.raises(ConnectionError):
        retry_call(fn, retry_on=ConnectionError, backoff=Backoff(0.01, 0.02), deadline_s=0.2)
    assert 5 <= fn.calls <= 25  # ~0.2 s of 0.01-0.02 s waits, not one call and not forever


def test_a_stop_event_cuts_the_wait_short():
    stop = threading.Event()
    fn = Flaky(10**9)
    threading.Timer(0.1, stop.set).start()
    with pytest.raises(ConnectionError):
        retry_call(fn, retry_on=ConnectionError, backoff=Backoff(3600, 3600), stop_event=stop)
    assert fn.calls == 1  # it gave up in the first (hour-long) wait when the stop came


def test_backoff_doubles_to_its_cap_with_bounded_jitter():
    b = Backoff(initial_s=0.5, cap_s=4.0)
    assert [b.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    j = Backoff(initial_s=1.0, cap_s=1.0, jitter=0.2)
    assert all(0.8 <= j.delay(3) <= 1.2 for _ in range(200))
    with pytest.raises(ValueError):
        Backoff(initial_s=2.0, cap_s=1.0)
