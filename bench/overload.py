"""S6 overload: open-loop load (constant arrival rate, latency from each request's due
time, HDR histograms) through the bridge at 80 % and 120 % of its measured maximum.

At 80 % the tail should stay near the median (p99 <= 3x p50). At 120 % the bridge should
keep nearly all of its maximum goodput and refuse the excess fast (admission control:
`rate_limited` once DISPATCH_MAX_IN_FLIGHT calls are in flight) instead of queueing it.

The maximum is wrk's saturation throughput (a light generator, so a true ceiling); the
open-loop generator is Python on the same two cores, so at 120 % it takes CPU the services
would otherwise have: its CPU seconds are reported beside the figures.
"""

from __future__ import annotations

import os

from bench._context import Bench, bridge_saturation
from bench._load import latencies, open_loop
from bench._report import Figure, figure


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


async def run(bench: Bench) -> list[Figure]:
    sizes = bench.sizes
    call = bench.calls["bridge"]
    seconds = 1.0 if sizes.quick else max(sizes.seconds, 5.0)
    await latencies(call, 50)
    tail, goodput, shed_ms, shed_share, maxima, generator = [], [], [], [], [], []

    for _ in range(sizes.reps):
        top = await bridge_saturation(bench, connections=64, requests=max(sizes.requests, 2000))
        maxima.append(top)
        calm = await open_loop(call, 0.8 * top, seconds)
        tail.append(calm.p99_ms / calm.p50_ms)
        before = _own_cpu()
        over = await open_loop(call, 1.2 * top, seconds)
        generator.append((_own_cpu() - before) / seconds)
        goodput.append(over.goodput_per_s / top)
        shed = sum(n for s, n in over.statuses.items() if not 200 <= s < 300)
        shed_share.append(shed / sum(over.statuses.values()))
        shed_ms.append(over.shed_p50_ms or 0.0)
    return [
        figure("S6", "max throughput, wrk, 64 connections (calls/s)", maxima, ""),
        figure("S6", "open loop at 80 % of max: p99 / p50", tail, "<= 3"),
        figure("S6", "open loop at 120 % of max: goodput / max", goodput, ">= 0.9"),
        figure("S6", "at 120 %: share of calls shed", shed_share, ""),
        figure("S6", "at 120 %: p50 of shed calls (ms)", shed_ms, ""),
        figure("S6", "at 120 %: open-loop generator CPU (cores)", generator, ""),
    ]
