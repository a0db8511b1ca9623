"""An adaptive limit on the tool calls running at once, learnt from their latency.

Why: once the bridge, dispatch-api or PostgreSQL is saturated, every call admitted beyond
what they can serve waits in a queue (the loop's, dispatch-api's, the database's) and
makes every other call wait too. A fixed cap (DISPATCH_MAX_IN_FLIGHT) cannot know where
saturation starts: that depends on the machine, the tool mix and how fast dispatch-api
answers. The loop-lag guard (_overload.py) sees the queue only once it has stood for a
while, so the excess it refuses has already waited that long. This limit keeps the queue
from forming: it admits as many calls at once as keep their latency within `tolerance`
times the latency of calls that did not queue, and the transports refuse the rest at once,
before their body is read (bridge/_edge.py).

How (the gradient of TCP Vegas, as in Netflix's concurrency-limits): call latencies are
taken in windows of at least `window_s` and `_WINDOW_CALLS` calls. A window whose median
is above `tolerance` x the baseline shrinks the limit in proportion (by half at most), so
an overload's onset brings a limit at its ceiling down within a few windows. A window
within the tolerance grows it: by one call when its calls were slower than unloaded ones
(a short queue: the limit is near the knee, and probes past it a call at a time rather
than overshoot it), by its square root when they were as quick as unloaded ones (after an
overload: the limit opens again within a second or two of load). The baseline is the
lowest window median of the last `baseline_s` seconds (10) only, so it follows a
dispatch-api that became slower for good instead of keeping the limit at its floor.

That horizon is a trade-off measured in the S6 bench. Under a lasting overload every window
queues, so a short horizon (two seconds, the first version's) soon holds only queued
windows, "twice the baseline" then admits twice a queued latency, and the limit wandered
between 10 and 24 above its floor of 8, the queue with it (shed calls waited 21 ms, a
fixed cap of 8 12.5 ms). A horizon of ten seconds keeps an overload's limit near its
floor for that long; the price is that a dispatch-api which became slower for good under
heavy load is served at the floor for up to ten seconds before the limit learns its new
speed.

The limit stays within [min_limit, max_limit]. The ceiling is the fixed cap. The floor is
what one process needs in flight to keep itself, dispatch-api and PostgreSQL busy (in the
S6 bench a fixed cap of 8 served as many calls a second as caps of 16 and 256, and a floor
of 4 fewer; bench/results/analysis.md): the latency of calls that share a core grows with
the calls in flight well before they queue in earnest, so without a floor the limit would
throttle a healthy service.

A refusal for the limit goes, like one for the loop's lag, to the key behind the load when
there is one (bridge/_edge.py, KeyAdmission.sheds): the other keys' calls are admitted
beyond the limit, which bounds the work of one key and not the others' share.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

#: A window closes at the first call to end once it has this many calls and `window_s`
#: has passed: fewer calls make a median that is one call's luck.
_WINDOW_CALLS = 10
#: A window this close to the baseline saw no queue at all: the limit grows fast (by its
#: square root), as it recovers after an overload; between this and the tolerance, by one.
_UNLOADED = 1.25


class AdaptiveLimit:
    """How many calls may run at once now (`limit`); `start` and `end` bracket each call."""

    def __init__(
        self,
        min_limit: int,
        max_limit: int,
        *,
        tolerance: float = 2.0,
        window_s: float = 0.05,
        baseline_s: float = 10.0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._max = float(max_limit)
        self._min = float(min(min_limit, max_limit))  # a floor above the ceiling: fixed
        self._tolerance = tolerance
        self._window_s = window_s
        self._baseline_s = baseline_s
        self._clock = clock
        # Start at the ceiling: nothing is known yet that says the calls queue.
        self._limit = self._max
        self.in_flight = 0
        self._samples: list[float] = []
        self._window_end = clock() + window_s
        # (time, median) of the windows that can still become the baseline, oldest and
        # lowest first, each median higher than the one before it: a window followed by a
        # quicker one can never be the lowest again (a sliding-window minimum).
        self._medians: deque[tuple[float, float]] = deque()

    @property
    def limit(self) -> int:
        return int(self._limit)

    def full(self) -> bool:
        """Whether the calls in flight have reached the limit (a new one is to be refused)."""
        return self.in_flight >= int(self._limit)

    def start(self) -> float:
        """Count a call in flight from now; hand what this returns to `end`."""
        self.in_flight += 1
        return self._clock()

    def end(self, started: float) -> None:
        """The call `started` ended (whatever its outcome): its latency is a sample."""
        now = self._clock()
        self.in_flight -= 1
        self._samples.append(now - started)
        if now >= self._window_end and len(self._samples) >= _WINDOW_CALLS:
            self._adapt(now)

    def _adapt(self, now: float) -> None:
        samples = sorted(self._samples)
        latency = samples[len(samples) // 2]
        medians = self._medians
        while medians and medians[-1][1] >= latency:
            medians.pop()
        medians.append((now, latency))
        while medians[0][0] < now - self._baseline_s:
            medians.popleft()
        baseline = medians[0][1]
        limit = self._limit
        if latency > self._tolerance * baseline:
            limit *= max(0.5, self._tolerance * baseline / latency)
        elif latency <= _UNLOADED * baseline:
            limit += math.sqrt(limit)
        else:
            limit += 1.0
        self._limit = min(self._max, max(self._min, limit))
        self._samples.clear()
        self._window_end = now + self._window_s
