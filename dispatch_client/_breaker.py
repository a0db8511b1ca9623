"""A circuit breaker per downstream: fail fast while dispatch-api is known to be down."""

from __future__ import annotations

import enum
from collections.abc import Callable

from ._errors import CircuitOpen
from ._policy import BreakerConfig


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Opens after `failure_threshold` consecutive transient failures; after `open_s` one
    probe is let through (half-open): its success closes the circuit, its failure reopens it.

    Only signs of an unhealthy downstream count (no answer, timeouts, 5xx, a 2xx that is not
    JSON): a 4xx, 429 included, is a healthy downstream saying no.
    """

    def __init__(self, config: BreakerConfig, clock: Callable[[], float]) -> None:
        self._config = config
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self._config.open_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def before_call(self) -> bool:
        """Raise CircuitOpen unless a call may go out now; True when it goes out as the probe."""
        state = self.state
        if state is BreakerState.CLOSED:
            return False
        if state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        assert self._opened_at is not None
        remaining = self._config.open_s - (self._clock() - self._opened_at)
        raise CircuitOpen(max(remaining, 0.1))

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def record_abandoned(self) -> None:
        """The probe ended without a verdict (cancelled): let another probe through.

        Call it only for the call `before_call` admitted as the probe."""
        self._probing = False

    def record_failure(self) -> None:
        self._failures += 1
        if self._probing or self._failures >= self._config.failure_threshold:
            self._opened_at = self._clock()
        self._probing = False
