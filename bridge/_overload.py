"""Overload admission: refuse a tool call at once, before its body is read, while the calls
in flight are at the adaptive limit (_concurrency.py) or the event loop lags.

The two see different things. The limit counts calls admitted and learns from their
latency how many may run at once: it keeps a queue from forming, in the bridge and behind
it, so the excess is refused before it has waited. But a new request waits in its socket
buffer and in the loop's ready queue before any handler sees it, and the limit counts only
calls already admitted: when the loop itself is what is saturated (a burst of heavy bodies
read and parsed, CPU taken by something else), calls wait there uncounted. Loop lag
measures that wait directly: a timer due every `interval_s` fires late by as long as ready
work queued ahead of it. While the lag is above the bound, new calls are refused cheaply
(no body read, nothing parsed, nothing sent downstream), which gives the loop back to the
calls already admitted, so the lag falls and calls are admitted again. At normal load the
loop keeps up and the lag stays near zero: nothing is refused.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web
from prometheus_client import Gauge

from tools import ToolError

from ._concurrency import AdaptiveLimit

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
    """Refuses new calls while the calls in flight are at `limit` (when given) or `lag` is
    above `max_lag_s`; `max_lag_s` 0 turns the lag bound off."""

    def __init__(
        self,
        lag: Callable[[], float],
        max_lag_s: float,
        limit: AdaptiveLimit | None = None,
    ) -> None:
        self._lag = lag
        self._max = max_lag_s
        self._limit = limit

    @property
    def lag_ms(self) -> float:
        """The loop's lag now (the `event_loop_lag_seconds` gauge, in seconds)."""
        return self._lag() * 1000

    def refusal(self) -> ToolError | None:
        """`rate_limited` (nothing done, retry shortly) while the calls in flight are at the
        adaptive limit or the loop lags; else None."""
        limit = self._limit
        if limit is not None and limit.full():
            return _refused(
                f"The bridge is at capacity ({limit.limit} calls in flight, its limit now);"
                " nothing was done. Retry shortly.",
                {"reason": "bridge_at_capacity", "max_in_flight": limit.limit},
            )
        if self._max <= 0:
            return None
        lag = self._lag()
        if lag <= self._max:
            return None
        return _refused(
            "The bridge is overloaded (its event loop is running late); nothing was done."
            " Retry shortly.",
            {"reason": "bridge_overloaded", "loop_lag_ms": round(lag * 1000, 1)},
        )


def _refused(message: str, details: dict[str, Any]) -> ToolError:
    # Jittered like the in-flight cap's refusal, so a refused crowd does not return in step
    # and make the next burst.
    return ToolError(
        "rate_limited",
        message,
        retryable=True,
        retry_after_ms=random.randint(50, 250),
        details=details,
    )


def overload_guard(
    key: web.AppKey[OverloadGuard],
    max_lag_s: float,
    gauge: Gauge,
    limit: AdaptiveLimit | None = None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context that samples the app's loop lag while it runs, puts the guard
    reading it (and `limit`) in `app[key]` and shows the lag on `gauge` (read at scrape
    time)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        lag = LoopLag(asyncio.get_running_loop())
        lag.start()
        guard = OverloadGuard(lambda: lag.seconds, max_lag_s, limit)
        app[key] = guard
        gauge.set_function(lambda: guard.lag_ms / 1000)
        try:
            yield
        finally:
            lag.stop()

    return ctx
