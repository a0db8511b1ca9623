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
overload: the limit opens again within a second or two of load).

The baseline is the lowest median of the last `_BASELINE_WINDOWS` windows in which the
limit was never full: a window whose calls found it full queued by definition, and its
latency says nothing of unqueued calls'. That is what keeps a lasting overload's limit
near its floor: when every window counted, an overload's own queued windows became the
baseline within two seconds, "twice the baseline" then admitted twice a queued latency,
and the limit wandered between 10 and 24, off its floor of 8, the queue with it (in the S6
bench shed calls waited 23 ms at p50, 17 ms once full windows were left out, and a fixed
cap of 8 12.5 ms; bench/results/analysis.md). A dispatch-api that became slower for good
under load that keeps the limit full would then hold it at its floor for good, so once
`_LASTING_S` has passed without a window below the limit, full windows count too and the
baseline follows the new speed within a few seconds more.

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
#: How many windows back the baseline looks (of those in which the limit was never full):
#: a few seconds at a rate where the limit matters, so a lasting change of dispatch-api's
#: speed becomes the new baseline as fast.
_BASELINE_WINDOWS = 40
#: After this long with the limit full in every window, full windows count towards the
#: baseline too: the load is lasting, and its latency may be dispatch-api's new speed.
_LASTING_S = 10.0
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
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._max = float(max_limit)
        self._min = float(min(min_limit, max_limit))  # a floor above the ceiling: fixed
        self._tolerance = tolerance
        self._window_s = window_s
        self._clock = clock
        # Start at the ceiling: nothing is known yet that says the calls queue.
        self._limit = self._max
        self.in_flight = 0
        self._samples: list[float] = []
        self._window_end = clock() + window_s
        self._medians: deque[float] = deque(maxlen=_BASELINE_WINDOWS)
        self._was_full = False  # in the window now open
        self._last_not_full = self._window_end

    @property
    def limit(self) -> int:
        return int(self._limit)

    def full(self) -> bool:
        """Whether the calls in flight have reached the limit (a new one is to be refused);
        a window in which it was is left out of the baseline."""
        if self.in_flight >= int(self._limit):
            self._was_full = True
            return True
        return False

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
        if not self._was_full:
            self._last_not_full = now
        if not self._was_full or now - self._last_not_full > _LASTING_S:
            self._medians.append(latency)
        baseline = min(self._medians, default=latency)
        limit = self._limit
        if latency > self._tolerance * baseline:
            limit *= max(0.5, self._tolerance * baseline / latency)
        elif latency <= _UNLOADED * baseline:
            limit += math.sqrt(limit)
        else:
            limit += 1.0
        self._limit = min(self._max, max(self._min, limit))
        self._samples.clear()
        self._was_full = False
        self._window_end = now + self._window_s
