"""Overload admission: refuse a tool call at once, before its body is read, while the event
loop lags.

Why the in-flight cap (DISPATCH_MAX_IN_FLIGHT) is not enough: once the bridge's CPU is
saturated, a new request waits in its socket buffer and in the loop's ready queue before
any handler sees it, and the cap counts only calls already admitted. Excess is then refused
late (hundreds of milliseconds after it was sent) and the queue it waited in slows every
admitted call too. Loop lag measures that wait directly: a timer due every `interval_s`
fires late by as long as ready work queued ahead of it. While the lag is above the bound,
new calls are refused cheaply (no body read, nothing parsed, nothing sent downstream), which
gives the loop back to the calls already admitted, so the lag falls and calls are admitted
again. At normal load the loop keeps up and the lag stays near zero: nothing is refused.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from prometheus_client import Gauge

from tools import ToolError

#: How often the lag is sampled: often enough to follow a burst, a few µs per tick.
INTERVAL_S = 0.005
#: The lag is the smallest lateness of this many consecutive ticks (CoDel's idea): one late
#: tick (a GC pause, a burst, the OS or a CPU quota pausing the process) is not overload,
#: however late; a run of ticks none of which was on time is a standing queue.
WINDOW_TICKS = 8


class LoopLag:
    """How late the loop runs its timers: the smallest lateness among the last complete
    window of `window_ticks` ticks, in seconds (0 until a window has passed)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        interval_s: float = INTERVAL_S,
        window_ticks: int = WINDOW_TICKS,
    ) -> None:
        self._loop = loop
        self._interval = interval_s
        self._window = window_ticks
        self._standing = 0.0
        self._floor = float("inf")
        self._ticks = 0
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._due = self._loop.time() + self._interval
        self._handle = self._loop.call_at(self._due, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        now = self._loop.time()
        self._floor = min(self._floor, now - self._due)
        self._ticks += 1
        if self._ticks >= self._window:
            self._standing = max(0.0, self._floor)
            self._floor, self._ticks = float("inf"), 0
        self._due = now + self._interval
        self._handle = self._loop.call_at(self._due, self._tick)

    @property
    def seconds(self) -> float:
        return self._standing


class OverloadGuard:
    """Refuses new calls while `lag` is above `max_lag_s`; `max_lag_s` 0 turns it off."""

    def __init__(self, lag: Callable[[], float], max_lag_s: float) -> None:
        self._lag = lag
        self._max = max_lag_s

    @property
    def lag_ms(self) -> float:
        """The loop's lag now (the `event_loop_lag_seconds` gauge, in seconds)."""
        return self._lag() * 1000

    def refusal(self) -> ToolError | None:
        """`rate_limited` (nothing done, retry shortly) while the loop lags; else None."""
        if self._max <= 0:
            return None
        lag = self._lag()
        if lag <= self._max:
            return None
        # Jittered like the in-flight cap's refusal, so a refused crowd does not return in
        # step and make the next burst.
        return ToolError(
            "rate_limited",
            "The bridge is overloaded (its event loop is running late); nothing was done."
            " Retry shortly.",
            retryable=True,
            retry_after_ms=random.randint(50, 250),
            details={"reason": "bridge_overloaded", "loop_lag_ms": round(lag * 1000, 1)},
        )


def overload_guard(
    key: web.AppKey[OverloadGuard], max_lag_s: float, gauge: Gauge
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context that samples the app's loop lag while it runs, puts the guard
    reading it in `app[key]` and shows the lag on `gauge` (read at scrape time)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        lag = LoopLag(asyncio.get_running_loop())
        lag.start()
        guard = OverloadGuard(lambda: lag.seconds, max_lag_s)
        app[key] = guard
        gauge.set_function(lambda: guard.lag_ms / 1000)
        try:
            yield
        finally:
            lag.stop()

    return ctx
