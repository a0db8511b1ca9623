"""The collector's share of a serving process: what lives for the process is out of its reach.

CPython's cyclic collector walks every tracked object of the generations it collects. A
serving process holds some 75,000 of them from start-up (modules, the OpenTelemetry and
Prometheus machinery, compiled schemas, the app): each full collection walked them all,
45 ms during which every call in flight waited (measured under load: one such pause every
few thousand calls, in both services). And the youngest generation, collected once 700
containers more were allocated than freed, ran several times a second under load only
because a few calls in flight hold that many between them, although almost nothing they
allocate is cyclic garbage (reference counting frees it).

So, once every app has started (its listener just opened, before the first request is
handled): collect what start-up left over, move everything alive to the permanent
generation (`gc.freeze`, which collections skip), and collect the youngest generation only
after `YOUNG_THRESHOLD` net allocations. Garbage cycles are still collected, only later.
"""

from __future__ import annotations

import gc

#: Net container allocations before the youngest generation is collected (CPython's 700;
#: 3.13 raised its own default to 2,000). A call in flight holds ~100 young containers.
YOUNG_THRESHOLD = 5000


def settle_heap() -> None:
    """Collect start-up's garbage, freeze what remains, raise the youngest threshold.
    Call once per process, after start-up and before the first request is handled."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
