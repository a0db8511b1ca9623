"""S6 overload: open-loop load (constant arrival rate, latency from each request's due
time, HDR histograms) through the bridge at 80 % and 120 % of its measured maximum.

At 80 % the tail should stay near the median (p99 <= 3x p50) and nothing is refused. At
120 % the bridge should keep nearly all of its maximum goodput and refuse the excess fast
(admission control: `rate_limited` while its event loop lags, DISPATCH_MAX_LOOP_LAG_MS, or
once DISPATCH_MAX_IN_FLIGHT calls are in flight) instead of queueing it.

The generators must not take the services' CPU: the open-loop caller is Python and needs
~0.4 of a core at 120 %, which on a shared two-core machine is CPU the services had when
the maximum was measured. So, on a machine with two or more cores, this scenario pins this
process (the open-loop caller and wrk, the light saturation generator) to CPU 0 and the
services (bridge, dispatch-api, PostgreSQL) to the other cores, for the maximum and the
open-loop runs alike, and restores the affinity after. The caveat, in the rows' note: the
services then have one core fewer than in the other scenarios.

The 80 % run is repeated unpinned, to tell the bridge's tail from the pinned shape (three
services time-slicing one core, each call needing all three in turn): every process on
every core, and this process (the generator, and wrk for the maximum) at nice 19, so the
services win the cores whenever they are runnable.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import psutil

from bench._context import Bench, bridge_saturation
from bench._load import have_wrk, latencies, open_loop
from bench._report import Figure, figure

_SERVICES = ("api", "bridge", "postgres")


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _set_affinity(procs: list[psutil.Process], cpus: list[int]) -> None:
    for p in procs:
        with suppress(psutil.NoSuchProcess):
            p.cpu_affinity(cpus)


def _own_threads(cpus: set[int]) -> None:
    # Every thread of this process (sched_setaffinity on a pid moves only that thread):
    # wrk is started from a worker thread and inherits that thread's affinity.
    for tid in os.listdir("/proc/self/task"):
        with suppress(OSError):
            os.sched_setaffinity(int(tid), cpus)


@contextmanager
def niced() -> Iterator[str]:
    """Every thread of this process (and so wrk, started from one) at nice 19 while the
    block runs; the note for the figures. Only where the old priority can be restored
    (root, or CAP_SYS_NICE): otherwise nothing changes and the note says so."""
    tids = [int(t) for t in os.listdir("/proc/self/task")]
    before = {tid: os.getpriority(os.PRIO_PROCESS, tid) for tid in tids}
    if os.geteuid() != 0:
        yield "generator not niced (needs root to restore): services and generator share cores"
        return
    for tid in tids:
        with suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, tid, 19)
    try:
        yield "services on every core, generators at nice 19"
    finally:
        for tid, nice in before.items():
            with suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, tid, nice)


@contextmanager
def pinned(bench: Bench) -> Iterator[str]:
    """This process on CPU 0, the services on the others, while the block runs; the note
    to print beside the figures ("" when the machine has a single core: nothing pinned)."""
    everything = sorted(os.sched_getaffinity(0))
    if len(everything) < 2:
        yield ""
        return
    own, rest = everything[:1], everything[1:]
    services = [bench.product.process(n) for n in _SERVICES]
    services += bench.product.process("postgres").children(recursive=True)
    _set_affinity(services, rest)
    _own_threads(set(own))
    try:
        yield f"generators pinned to CPU {own[0]}, services to {len(rest)} other core(s)"
    finally:
        _own_threads(set(everything))
        services += bench.product.process("postgres").children(recursive=True)
        _set_affinity(services, everything)


async def run(bench: Bench) -> list[Figure]:
    sizes = bench.sizes
    call = bench.calls["bridge"]
    seconds = 1.0 if sizes.quick else max(sizes.seconds, 5.0)
    await latencies(call, 50)
    tail, calm_shed, goodput, shed_ms, shed_share, maxima, generator = [], [], [], [], [], [], []
    pinned_p50: list[float] = []
    pinned_p99: list[float] = []

    with pinned(bench) as note:
        for _ in range(sizes.reps):
            top = await _saturation(bench, seconds)
            maxima.append(top)
            calm = await open_loop(call, 0.8 * top, seconds)
            tail.append(calm.p99_ms / calm.p50_ms)
            pinned_p50.append(calm.p50_ms)
            pinned_p99.append(calm.p99_ms)
            calm_shed.append(_shed(calm.statuses) / sum(calm.statuses.values()))
            before = _own_cpu()
            over = await open_loop(call, 1.2 * top, seconds)
            generator.append((_own_cpu() - before) / seconds)
            goodput.append(over.goodput_per_s / top)
            shed_share.append(_shed(over.statuses) / sum(over.statuses.values()))
            shed_ms.append(over.shed_p50_ms or 0.0)
    free_tail, free_p50, free_p99 = [], [], []
    with niced() as free:
        for _ in range(sizes.reps):
            top = await _saturation(bench, seconds)
            calm = await open_loop(call, 0.8 * top, seconds)
            free_tail.append(calm.p99_ms / calm.p50_ms)
            free_p50.append(calm.p50_ms)
            free_p99.append(calm.p99_ms)
    return [
        figure("S6", "max throughput, wrk, 16 connections (2xx calls/s)", maxima, "", note),
        figure("S6", "open loop at 80 % of max: p99 / p50", tail, "<= 3", note),
        figure("S6", "open loop at 80 % of max: p50 (ms)", pinned_p50, "", note),
        figure("S6", "open loop at 80 % of max: p99 (ms)", pinned_p99, "", note),
        figure("S6", "open loop at 80 % of max: share of calls shed", calm_shed, "", note),
        figure("S6", "unpinned, at 80 % of its max: p99 / p50", free_tail, "", free),
        figure("S6", "unpinned, at 80 % of its max: p50 (ms)", free_p50, "", free),
        figure("S6", "unpinned, at 80 % of its max: p99 (ms)", free_p99, "", free),
        figure("S6", "open loop at 120 % of max: goodput / max", goodput, ">= 0.9", note),
        figure("S6", "at 120 %: share of calls shed", shed_share, "", note),
        figure("S6", "at 120 %: p50 of shed calls (ms)", shed_ms, "<= 10", note),
        figure("S6", "at 120 %: open-loop generator CPU (cores)", generator, "", note),
    ]


async def _saturation(bench: Bench, seconds: float) -> float:
    """The bridge's maximum goodput: 2xx answers per second from wrk at 16 connections.

    16, not more: on this machine throughput falls as closed-loop connections rise (with
    overload admission off, pinned, one run: 669 calls/s at 8, 604 at 16, 467 at 64), so
    more would understate the maximum. A refusal is not a failure here (64 connections keep a queue
    of ~100 ms, which overload admission refuses): the 2xx rate is what the bridge did."""
    if not have_wrk():
        return await bridge_saturation(bench, 16, max(bench.sizes.requests, 2000))
    script = "\n".join(
        [
            'wrk.method = "POST"',
            f"wrk.body = [[{bench.rest_body(bench.ticket).decode()}]]",
            *(f'wrk.headers["{k}"] = "{v}"' for k, v in bench.agent_headers.items()),
        ]
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    url = bench.product.urls["bridge"] + "/v1/tools/ticket.get/invoke"
    command = ["wrk", "-t1", "-c16", f"-d{max(1, round(seconds))}s", "-s", f.name, url]
    try:
        done = await asyncio.to_thread(
            subprocess.run, command, capture_output=True, text=True, check=True
        )
    finally:
        os.unlink(f.name)
    out = done.stdout
    rate, total = re.search(r"Requests/sec:\s+([\d.]+)", out), re.search(r"(\d+) requests", out)
    if rate is None or total is None or "Socket errors" in out:
        raise RuntimeError(f"wrk failed or printed no throughput:\n{out}")
    refused = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    good = int(total[1]) - (int(refused[1]) if refused else 0)
    return float(rate[1]) * good / int(total[1])


def _shed(statuses: dict[int, int]) -> int:
    return sum(n for s, n in statuses.items() if not 200 <= s < 300)
