"""One retry policy for the whole pipeline: capped exponential backoff with jitter, on tenacity.

Every place that waits out a transient fault (a camera reconnecting, a model replica restarting,
Redis coming back) uses :class:`Backoff` for its delays and :func:`retry_call` to repeat an
idempotent call. Permanent errors are never retried: only the exception types a caller names are.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

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
    ``on_retry(attempt, exc, delay)`` runs before each wait (``attempt`` is the call that failed, from
    1); ``stop_event`` cuts a wait short and re-raises at once (a stream being stopped must not sit out
    its backoff). A call that succeeds the first time costs nothing more than the call: tenacity's
    machinery is built only after a failure.
    """
    started = time.monotonic()
    try:
        return fn()
    except retry_on as exc:
        if attempts is not None and attempts <= 1:
            raise
        first: BaseException = exc

    def announce(attempt: int, exc: BaseException, delay: float) -> None:
        if log is not None:
            log.warning("%s failed (attempt %d: %s: %s); retrying in %.2fs", what, attempt, type(exc).__name__, exc,
                        delay)  # fmt: skip
        if on_retry is not None:
            on_retry(attempt, exc, delay)

    def sleep(seconds: float) -> None:
        if stop_event is None:
            time.sleep(seconds)
        elif stop_event.wait(seconds):
            raise _Stopped

    delay = backoff.delay(1)
    if deadline_s is not None and time.monotonic() - started + delay > deadline_s:
        raise first
    announce(1, first, delay)
    try:
        sleep(delay)
    except _Stopped:
        raise first from None

    # The remaining calls: attempt numbers continue from 2; the deadline counts from the first call.
    stop: Any = stop_never
    if attempts is not None:
        stop = stop_after_attempt(attempts - 1)
    if deadline_s is not None:
        remaining = max(0.0, deadline_s - (time.monotonic() - started))
        stop = stop_after_delay(remaining) if stop is stop_never else stop | stop_after_delay(remaining)

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if exc is not None:
            announce(state.attempt_number + 1, exc, state.next_action.sleep if state.next_action else 0.0)

    last: list[BaseException] = [first]

    def attempt() -> T:
        try:
            return fn()
        except BaseException as exc:
            last[:] = [exc]
            raise

    retrying = Retrying(
        retry=retry_if_exception_type(retry_on),
        wait=lambda state: backoff.delay(state.attempt_number + 1),
        stop=stop,
        before_sleep=before_sleep,
        sleep=sleep,
        reraise=True,
    )
    try:
        return retrying(attempt)
    except _Stopped:
        raise last[0] from None


class _Stopped(Exception):
    """Internal: a stop event ended a backoff wait."""
