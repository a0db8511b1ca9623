"""The loop-lag signal behind overload admission, on a hand-driven clock: a standing queue
counts, one late tick does not."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from bridge._overload import INTERVAL_S, WINDOW_TICKS, LoopLag, OverloadGuard


class FakeLoop:
    """Just enough of an event loop: a clock we move, and the one timer LoopLag keeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timer: tuple[float, Callable[[], None]] | None = None

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> Any:
        self.timer = (when, callback)
        return self  # the handle: LoopLag only ever cancels it

    def cancel(self) -> None:
        self.timer = None

    def fire(self, late_s: float) -> None:
        """Run the pending tick `late_s` after it was due."""
        assert self.timer is not None
        when, callback = self.timer
        self.now = when + late_s
        callback()


def lag_on(loop: FakeLoop) -> LoopLag:
    lag = LoopLag(cast(asyncio.AbstractEventLoop, loop))
    lag.start()
    return lag


def test_a_window_of_late_ticks_is_a_standing_lag() -> None:
    loop = FakeLoop()
    lag = lag_on(loop)

    for _ in range(WINDOW_TICKS):
        loop.fire(0.030)

    assert abs(lag.seconds - 0.030) < 1e-9


def test_one_late_tick_among_timely_ones_is_no_lag_however_late() -> None:
    loop = FakeLoop()
    lag = lag_on(loop)

    loop.fire(0.500)  # a half-second pause: GC, or a CPU quota running out
    for _ in range(WINDOW_TICKS - 1):
        loop.fire(0.0)

    assert lag.seconds == 0.0


def test_the_lag_clears_once_a_window_has_a_timely_tick() -> None:
    loop = FakeLoop()
    lag = lag_on(loop)
    for _ in range(WINDOW_TICKS):
        loop.fire(0.030)

    for late in [0.030] * (WINDOW_TICKS - 1) + [0.0]:
        loop.fire(late)

    assert lag.seconds == 0.0
    assert INTERVAL_S * WINDOW_TICKS <= 0.05  # a window is short: admission follows quickly


def test_the_guard_refuses_only_above_its_bound_and_never_when_off() -> None:
    lagging = OverloadGuard(lambda: 0.021, max_lag_s=0.020)
    calm = OverloadGuard(lambda: 0.019, max_lag_s=0.020)
    off = OverloadGuard(lambda: 10.0, max_lag_s=0.0)

    refused = lagging.refusal()

    assert refused is not None
    assert (refused.code, refused.retryable) == ("rate_limited", True)
    assert refused.details == {"reason": "bridge_overloaded", "loop_lag_ms": 21.0}
    assert calm.refusal() is None
    assert off.refusal() is None
