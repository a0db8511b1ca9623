"""Give memory back to the OS once a burst of calls is over.

After a burst (bench/memory.py: 2,000 calls in flight) the live Python heap is back to its
size before, yet the process keeps what it grew: the server connections of the burst die in
reference cycles and wait for the next full collection, and glibc keeps the chunks freed
inside its heap (its trim threshold only gives back the heap's free top). So when no call is
in flight, none has started for two check intervals, and RSS has grown by
`threshold_bytes` since the last trim, one full
`gc.collect()` and glibc's `malloc_trim(0)` (which also releases free pages inside the heap)
give it back. pymalloc's 1 MiB arenas go back only when wholly empty, so a part stays
(bench/results/analysis.md, "Memory").

The check costs one read of /proc/self/statm twice a second; the trim itself (a full
collection, tens of ms) runs only after two checks in a row without any call, and at most
once per growth, so a steady trickle of calls never meets it. On a libc without
`malloc_trim` (musl, macOS) or without /proc, nothing is done.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import resource
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from telemetry import JsonLog


def glibc_trim() -> Callable[[], object] | None:
    """glibc's `malloc_trim(0)`, or None when the C library has none."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


def resident_bytes() -> int | None:
    """This process's RSS from /proc/self/statm (Linux), None elsewhere."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return None


#: (calls in flight, calls started so far).
Calls = Callable[[], tuple[int, int]]


class IdleTrim:
    """Trims when no call was in flight or started since the previous check and RSS grew
    `threshold_bytes` over the last trim."""

    def __init__(
        self,
        calls: Calls,
        threshold_bytes: int,
        *,
        trim: Callable[[], object] | None,
        rss: Callable[[], int | None] = resident_bytes,
    ) -> None:
        self._calls = calls
        self._started = calls()[1]
        self._quiet = 0
        self._threshold = threshold_bytes
        self._trim = trim
        self._rss = rss
        self._floor = rss()

    def check(self) -> tuple[int, int] | None:
        """Trim if due; (RSS before, RSS after) when it did."""
        in_flight, started = self._calls()
        self._quiet = self._quiet + 1 if in_flight == 0 and started == self._started else 0
        self._started = started
        # Two quiet checks in a row: a whole interval after the last call ended, so what its
        # connections held (closed by the agents once answered) has been let go too.
        if self._trim is None or self._floor is None or self._quiet < 2:
            return None
        before = self._rss()
        if before is None or before < self._floor + self._threshold:
            return None
        gc.collect()
        self._trim()
        after = self._rss() or before
        # What stays (live data, pymalloc arenas) is the new floor: no trim again until the
        # process grows again, so a heap that cannot shrink is not trimmed every second.
        self._floor = after
        return before, after


def idle_trim(
    calls: Callable[[web.Application], tuple[int, int]], threshold_mb: int, log: JsonLog
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx checking twice a second; off when `threshold_mb` is 0."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if threshold_mb <= 0:
            yield
            return
        trimmer = IdleTrim(lambda: calls(app), threshold_mb * 1024 * 1024, trim=glibc_trim())

        async def loop() -> None:
            while True:
                await asyncio.sleep(0.5)
                if (done := trimmer.check()) is not None:
                    log.emit(
                        "memory_trimmed",
                        {"rss_before_bytes": done[0], "rss_after_bytes": done[1]},
                    )

        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()

    return ctx
