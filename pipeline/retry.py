"""One retry policy for the whole pipeline: capped exponential backoff with jitter, on tenacity.

Every place that waits out a transient fault (a camera reconnecting, a model replica restarting,
Redis coming back) uses :class:`Backoff` for its delays and :func:`retry_call` to repeat an
idempotent call. Permanent errors are never retried: only the exception types a caller names are.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, stop_after_delay, stop_never

T = TypeVar("T")

__all__ = ["Backoff", "retry_call"]


@dataclass(frozen=True)
class Backoff:
    """Delay before retry ``n`` (1-based): ``min(cap_s, initial_s × 2^(n−1))``, times a uniform jitter
    in ``[1 − jitter, 1 + jitter]`` so many streams that failed together do not retry together."""

    initial_s: float = 0.05
    cap_s: float = 1.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if not (self.initial_s > 0 and self.cap_s >= self.initial_s):
            raise ValueError(f"Backoff needs 0 < initial_s <= cap_s (got {self.initial_s}, {self.cap_s})")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"Backoff jitter must lie in [0, 1) (got {self.jitter})")

    def delay(self, attempt: int) -> float:
        base = min(self.cap_s, self.initial_s * (2 ** max(0, attempt - 1)))
        if self.jitter:
            base *= 1 - self.jitter + 2 * self.jitter * random.random()
        return base

    def _wait(self, state: RetryCallState) -> float:
        return self.delay(state.attempt_number)


def retry_call(
    fn: Callable[[], T],
    *,
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    backoff: Backoff = Backoff(),
    attempts: int | None = None,
    deadline_s: float | None = None,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    stop_event: threading.Event | None = None,
    log: logging.Logger | None = None,
    what: str = "call",
) -> T:
    """Call ``fn`` until it returns, retrying the ``retry_on`` exceptions with ``backoff``.

    It gives up after ``attempts`` calls or ``deadline_s`` seconds (whichever comes first; neither
    means forever) and re-raises the last exception, so the caller turns it into its own typed error.
    ``on_retry(attempt, exc, delay)`` runs before each wait; ``stop_event`` cuts a wait short and
    re-raises at once (a stream being stopped must not sit out its backoff).
    """
    stop = stop_never
    if attempts is not None:
        stop = stop_after_attempt(attempts)
    if deadline_s is not None:
        stop = stop_after_delay(deadline_s) if stop is stop_never else stop | stop_after_delay(deadline_s)

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        if log is not None:
            log.warning(
                "%s failed (attempt %d: %s: %s); retrying in %.2fs",
                what,
                state.attempt_number,
                type(exc).__name__,
                exc,
                delay,
            )
        if on_retry is not None and exc is not None:
            on_retry(state.attempt_number, exc, delay)

    def sleep(seconds: float) -> None:
        if stop_event is None:
            threading.Event().wait(seconds)
        elif stop_event.wait(seconds):
            raise _Stopped

    retrying = Retrying(
        retry=retry_if_exception_type(retry_on),
        wait=backoff._wait,
        stop=stop,
        before_sleep=before_sleep,
        sleep=sleep,
        reraise=True,
    )
    last: list[BaseException] = []

    def attempt() -> T:
        try:
            return fn()
        except BaseException as exc:
            last[:] = [exc]
            raise

    try:
        return retrying(attempt)
    except _Stopped:
        raise last[0] from None


class _Stopped(Exception):
    """Internal: a stop event ended a backoff wait."""
