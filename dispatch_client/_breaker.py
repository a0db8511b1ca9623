"""A circuit breaker per downstream: fail fast while dispatch-api is known to be down, and
never because one caller's own work is heavy or slow.

Every caller (agent) shares the breaker, so it must not open on evidence that only one
caller produces: one agent's burst of oversized uploads timing out says nothing about the
calls of the others, and opening would fail them all fast for `open_s` (issue 14). The
policy, in three rules:

1. Failures are counted per caller, in a row: a caller's success (or 4xx) clears its count;
   another caller's success does not, so a failing caller is not hidden by a healthy one,
   and a healthy one is not blamed for a failing one.
2. The circuit opens when the failing callers (those whose last outcome, within `window_s`,
   was a failure) add up to `failure_threshold` failures *and* they are at least
   `min(min_callers, callers seen within window_s)`. With several agents at work, one of
   them failing alone is its problem; when they all fail, dispatch-api is down. With a
   single agent (or one active within the window) its failures are enough, so a real outage
   still opens the circuit when only one agent is calling.
3. A try that timed out after sending a body over `heavy_body_bytes` is not counted: its
   slowness may be its own size (a 5 MiB upload), and a downstream that is really hung
   also times out the cheap calls, which do count.

The half-open probe is as before: after `open_s` one call goes out, whoever makes it; its
success closes the circuit, its failure (any failure, a heavy timeout included) reopens it.
"""

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
    """Only signs of an unhealthy downstream count (no answer, timeouts, 5xx, a 2xx that is
    not JSON): a 4xx, 429 included, is a healthy downstream saying no (`record_success`)."""

    def __init__(self, config: BreakerConfig, clock: Callable[[], float]) -> None:
        self._config = config
        self._clock = clock
        #: caller -> when its last try ended (any outcome), within the window.
        self._seen: dict[str, float] = {}
        #: caller -> (failures in a row, when the last one was), for callers failing now.
        self._failing: dict[str, tuple[int, float]] = {}
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

    def record_success(self, caller: str) -> None:
        self._seen[caller] = self._clock()
        self._failing.pop(caller, None)
        if self._opened_at is not None:  # the probe (or a call sent before opening) got through
            self._failing.clear()
        self._opened_at = None
        self._probing = False

    def record_abandoned(self) -> None:
        """The probe ended without a verdict (cancelled): let another probe through.

        Call it only for the call `before_call` admitted as the probe."""
        self._probing = False

    def record_failure(self, caller: str, *, heavy_timeout: bool = False) -> None:
        """A transient failure of `caller`'s try; `heavy_timeout` when the try timed out
        sending more than `heavy_body_bytes` (rule 3: not counted, unless it was the probe)."""
        now = self._clock()
        self._forget_before(now - self._config.window_s)
        self._seen[caller] = now
        if self._probing:
            self._open(now)
            return
        if heavy_timeout:
            return
        count, _ = self._failing.get(caller, (0, now))
        self._failing[caller] = (count + 1, now)
        failures = sum(n for n, _ in self._failing.values())
        needed = min(self._config.min_callers, len(self._seen))
        if failures >= self._config.failure_threshold and len(self._failing) >= needed:
            self._open(now)

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._probing = False
        self._failing.clear()

    def _forget_before(self, horizon: float) -> None:
        """Drop callers not seen since `horizon` (bounded by the callers of one window)."""
        self._seen = {c: t for c, t in self._seen.items() if t >= horizon}
        self._failing = {c: v for c, v in self._failing.items() if v[1] >= horizon}
