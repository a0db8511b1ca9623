"""S6 overload: open-loop load (constant arrival rate, latency from each request's due
time, HDR histograms) through the bridge at 80 % and 120 % of its measured maximum.

At 80 % the tail should stay near the median (p99 <= 3x p50) and nothing is refused. At
120 % the bridge should keep nearly all of its maximum goodput and refuse the excess fast
(admission control: `rate_limited` once the calls in flight reach the adaptive limit,
DISPATCH_MIN_IN_FLIGHT .. DISPATCH_MAX_IN_FLIGHT, or while its event loop lags,
DISPATCH_MAX_LOOP_LAG_MS) instead of queueing it. The maximum is the higher 2xx rate of wrk
at 8 and at 16 connections (the limit refuses some of 16's, and refusing takes CPU).

The generators must not take the services' CPU: the open-loop caller is Python and needs
~0.4 of a core at 120 %, which on a shared two-core machine is CPU the services had when
the maximum was measured. So, on a machine with two or more cores, this scenario pins this
process (the open-loop caller and wrk, the light saturation generator) to CPU 0 and every
process of the product (bridge, dispatch-api, PostgreSQL, the minimal proxies) to the other
cores, for the maximum and the open-loop runs alike, and restores the affinity after. The
caveat, in the rows' note: the services then have one core fewer than in the other
scenarios.

The 80 % run is repeated, pinned the same way, against the minimal forwarding proxy
(bench/proxy_floor.py) at 80 % of its own maximum: the tail of any Python hop in this
shape (three processes time-slicing one core, each call needing all three in turn), the
floor the bridge's tail is read against.

The 120 % run is repeated against the minimal proxy refusing beyond a fixed 8 in flight
(CAPPED_PROXY_IN_FLIGHT), at 120 % of its own maximum: how soon, and at what cost to
goodput, the least code that refuses in Python answers a refusal in this shape.

And a second product with a tighter loop-lag bound (TIGHT_LAG_MS) runs the pinned 80 % and
120 % again: the shed calls wait about as long as the bound lets the lag stand, so this
shows what a tighter bound buys at 120 % and whether it refuses calls at 80 %.

What a refusal costs decides how much of the maximum is left at 120 %: every call refused
takes CPU from the calls served on the same core. So a product whose bridge and minimal
proxy refuse every call (REFUSING) is driven by wrk, pinned the same way, and the CPU per
answer of each is set beside the bridge's per served call.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import AsyncExitStack, contextmanager, suppress
from typing import Any, Protocol

import psutil

from bench import profile
from bench._context import Bench, side_by_side
from bench._load import closed_loop, have_wrk, latencies, open_loop
from bench._product import Product
from bench._report import Figure, figure
from bench.cpu import cpu_seconds


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


class Processes(Protocol):
    """What `pinned` needs of a product: the processes it started, and each by name."""

    @property
    def procs(self) -> Mapping[str, Any]: ...

    def process(self, name: str) -> psutil.Process: ...


@contextmanager
def pinned(product: Processes) -> Iterator[str]:
    """This process on CPU 0, every process of `product` (and PostgreSQL's backends) on the
    others, while the block runs; the note to print beside the figures ("" when the machine
    has a single core: nothing pinned)."""
    everything = sorted(os.sched_getaffinity(0))
    if len(everything) < 2:
        yield ""
        return
    own, rest = everything[:1], everything[1:]
    # Every process the product started, the minimal proxies among them: the floors' hop
    # must not run on the generators' core either (left free to, the proxy at 80 % of its
    # maximum shared CPU 0 with the open-loop caller, which then fell seconds behind).
    names = (*product.procs, "postgres")
    services = [product.process(n) for n in names]
    services += product.process("postgres").children(recursive=True)
    _set_affinity(services, rest)
    _own_threads(set(own))
    try:
        yield f"generators pinned to CPU {own[0]}, services to {len(rest)} other core(s)"
    finally:
        _own_threads(set(everything))
        services += product.process("postgres").children(recursive=True)
        _set_affinity(services, everything)


#: The loop-lag bound of the side run (the product's default is 20 ms): how fast the excess
#: is refused follows the bound, and a tighter one may refuse calls at normal load.
TIGHT_LAG_MS = "5"

#: The floor for a refusal's wait (bench/proxy_floor.py, capped): the least code that
#: refuses beyond a fixed number in flight, the bridge's limit at its floor
#: (DISPATCH_MIN_IN_FLIGHT), in the same shape: how soon any Python hop sharing one core
#: with dispatch-api and PostgreSQL gets to answer a call it refuses.
CAPPED_PROXY_IN_FLIGHT = 8

#: Every call refused at admission: the bridge's by its key's rate (one call in 1,000 s; the
#: first is the ticket `prepare` creates), which takes the path an overload refusal takes
#: (authenticated, then refused before the body is read, logged, counted, traced); the
#: minimal proxy's by a cap of none in flight.
REFUSING = {
    "DISPATCH_RATE_LIMIT_PER_S": "0.001",
    "DISPATCH_RATE_LIMIT_BURST": "1",
    "BENCH_PROXY_MAX_IN_FLIGHT": "0",
}


async def run(bench: Bench) -> list[Figure]:
    sizes = bench.sizes
    seconds = 1.0 if sizes.quick else max(sizes.seconds, 5.0)
    floor_tail, floor_p50, floor_p99 = [], [], []
    with pinned(bench.product) as note:
        main = await _runs(bench, seconds)
        for _ in range(sizes.reps):
            top = await _saturation(bench, seconds, "proxy")
            calm = await open_loop(bench.calls["proxy"], 0.8 * top, seconds)
            floor_tail.append(calm.p99_ms / calm.p50_ms)
            floor_p50.append(calm.p50_ms)
            floor_p99.append(calm.p99_ms)
    async with AsyncExitStack() as stack:
        env = {"DISPATCH_MAX_LOOP_LAG_MS": TIGHT_LAG_MS}
        tight = (await side_by_side(stack, bench, {"tight": Product(env)}))["tight"]
        with pinned(tight.product):
            side = await _runs(tight, seconds)
    async with AsyncExitStack() as stack:
        env = {"BENCH_PROXY_MAX_IN_FLIGHT": str(CAPPED_PROXY_IN_FLIGHT)}
        capped = (await side_by_side(stack, bench, {"capped": Product(env)}))["capped"]
        with pinned(capped.product):
            refusals = await _capped_floor(capped, seconds)
    async with AsyncExitStack() as stack:
        refusing = (await side_by_side(stack, bench, {"refusing": Product(REFUSING)}))["refusing"]
        with pinned(bench.product):
            served = [await _cpu_per_answer(bench, seconds, "bridge") for _ in range(sizes.reps)]
        with pinned(refusing.product):
            cost = {
                target: [
                    await _cpu_per_answer(refusing, seconds, target) for _ in range(sizes.reps)
                ]
                for target in ("bridge", "proxy")
            }
            await _refusal_profiles(refusing)
    per_served = [r / s for r, s in zip(cost["bridge"], served, strict=True)]
    bound = f"DISPATCH_MAX_LOOP_LAG_MS={TIGHT_LAG_MS}"
    capped_floor = f"minimal proxy refusing beyond {CAPPED_PROXY_IN_FLIGHT} in flight"
    return [
        figure(
            "S6", "max throughput, wrk, 8 or 16 connections (2xx calls/s)", main["max"], "", note
        ),
        figure("S6", "open loop at 80 % of max: p99 / p50", main["tail"], "<= 3", note),
        figure("S6", "open loop at 80 % of max: p50 (ms)", main["p50"], "", note),
        figure("S6", "open loop at 80 % of max: p99 (ms)", main["p99"], "", note),
        figure("S6", "open loop at 80 % of max: share of calls shed", main["calm_shed"], "", note),
        figure("S6", "minimal proxy at 80 % of its max: p99 / p50 (floor)", floor_tail, "", note),
        figure("S6", "minimal proxy at 80 % of its max: p50 (ms)", floor_p50, "", note),
        figure("S6", "minimal proxy at 80 % of its max: p99 (ms)", floor_p99, "", note),
        figure("S6", "open loop at 120 % of max: goodput / max", main["goodput"], ">= 0.9", note),
        figure("S6", "at 120 %: share of calls shed", main["shed"], "", note),
        figure("S6", "at 120 %: p50 of shed calls (ms)", main["shed_ms"], "<= 10", note),
        figure("S6", "at 120 %: open-loop generator CPU (cores)", main["generator"], "", note),
        figure(
            "S6",
            f"{capped_floor}: at 120 % of its max, goodput / max",
            refusals["goodput"],
            "",
            note,
        ),
        figure(
            "S6", f"{capped_floor}: p50 of shed calls (ms) (floor)", refusals["shed_ms"], "", note
        ),
        figure("S6", "bridge CPU per call refused at admission (µs)", cost["bridge"], "", note),
        figure("S6", "bridge CPU per call served (µs)", served, "", note),
        figure("S6", "bridge CPU per refused / per served call", per_served, "", note),
        figure("S6", "minimal proxy CPU per call refused (µs), the floor", cost["proxy"], "", note),
        figure("S6", f"{bound}: max throughput (2xx calls/s)", side["max"], "", note),
        figure("S6", f"{bound}: at 80 %, share of calls shed", side["calm_shed"], "", note),
        figure("S6", f"{bound}: at 120 %, goodput / max", side["goodput"], "", note),
        figure("S6", f"{bound}: at 120 %, p50 of shed calls (ms)", side["shed_ms"], "", note),
    ]


async def _runs(bench: Bench, seconds: float) -> dict[str, list[float]]:
    """Per repetition: the maximum, then open loops at 80 % and 120 % of it."""
    call = bench.calls["bridge"]
    await latencies(call, 50)
    out: dict[str, list[float]] = {
        k: []
        for k in (
            "max",
            "tail",
            "p50",
            "p99",
            "calm_shed",
            "goodput",
            "shed",
            "shed_ms",
            "generator",
        )
    }
    for _ in range(bench.sizes.reps):
        top = await _saturation(bench, seconds)
        out["max"].append(top)
        calm = await open_loop(call, 0.8 * top, seconds)
        out["tail"].append(calm.p99_ms / calm.p50_ms)
        out["p50"].append(calm.p50_ms)
        out["p99"].append(calm.p99_ms)
        out["calm_shed"].append(_shed(calm.statuses) / sum(calm.statuses.values()))
        before = _own_cpu()
        over = await open_loop(call, 1.2 * top, seconds)
        out["generator"].append((_own_cpu() - before) / seconds)
        out["goodput"].append(over.goodput_per_s / top)
        out["shed"].append(_shed(over.statuses) / sum(over.statuses.values()))
        out["shed_ms"].append(over.shed_p50_ms or 0.0)
    return out


async def _capped_floor(bench: Bench, seconds: float) -> dict[str, list[float]]:
    """Per repetition: the capped minimal proxy's maximum, then an open loop at 120 % of it."""
    out: dict[str, list[float]] = {"goodput": [], "shed_ms": []}
    for _ in range(bench.sizes.reps):
        top = await _saturation(bench, seconds, "proxy")
        over = await open_loop(bench.calls["proxy"], 1.2 * top, seconds)
        out["goodput"].append(over.goodput_per_s / top)
        out["shed_ms"].append(over.shed_p50_ms or 0.0)
    return out


async def _saturation(bench: Bench, seconds: float, target: str = "bridge") -> float:
    """The maximum goodput of the bridge (or the minimal proxy): the higher rate of 2xx
    answers from wrk at 8 and at 16 connections.

    No more: on this machine throughput falls as closed-loop connections rise (with
    overload admission off, pinned, one run: 669 calls/s at 8, 604 at 16, 467 at 64), so
    more would understate the maximum. A refusal is not a failure here (64 connections keep
    a queue of ~100 ms, which overload admission refuses): the 2xx rate is what the bridge
    did. But the refusals take CPU the answers then lack: with the adaptive limit at its
    floor of 8, some of wrk's 16 connections are refused and their 2xx rate read ~0.9 of
    what the same bridge then served open-loop (the session that added 8), so 8
    connections, which the floor never refuses, are measured too."""
    return max([(await _wrk(bench, seconds, target, c))[1] for c in (8, 16)])


async def _refusal_profiles(refusing: Bench) -> None:
    """Where a refusal's CPU goes: the refusing bridge and the refusing minimal proxy
    profiled under wrk, and set side by side (the sections land in the main results)."""

    def load(target: str) -> Callable[[float], Awaitable[float]]:
        async def run(seconds: float) -> float:
            return (await _wrk(refusing, seconds, target, 8))[0]

        return run

    what = "wrk (`ticket.get`), every call refused"
    bridge = await profile.sampled(
        refusing, "bridge", "Bridge profile refusing (S6)", what, load("bridge")
    )
    proxy = await profile.sampled(
        refusing, "proxy", "Minimal proxy profile refusing (S6)", what, load("proxy")
    )
    profile.compared(
        refusing, "A refusal: the bridge against the minimal proxy (S6)", bridge, proxy
    )


async def _cpu_per_answer(bench: Bench, seconds: float, target: str) -> float:
    """CPU µs of the `target` process ("bridge", "proxy") per answer, whatever its status,
    while wrk at 8 connections keeps it busy."""
    process = bench.product.process(target)
    before = cpu_seconds(process)
    answers, _ = await _wrk(bench, seconds, target, 8)
    return (cpu_seconds(process) - before) / (answers * max(1, round(seconds))) * 1e6


async def _wrk(bench: Bench, seconds: float, target: str, connections: int) -> tuple[float, float]:
    """Answers per second, all and 2xx, from wrk at `connections` (an aiohttp closed loop
    when wrk is not installed, which counts every answer as both)."""
    if not have_wrk():
        calls = max(bench.sizes.requests, 2000)
        answered = await closed_loop(bench.calls[target], calls, connections)
        return answered, answered
    script = "\n".join(
        [
            'wrk.method = "POST"',
            f"wrk.body = [[{bench.rest_body(bench.ticket).decode()}]]",
            *(f'wrk.headers["{k}"] = "{v}"' for k, v in bench.agent_headers.items()),
        ]
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    url = bench.product.urls[target] + "/v1/tools/ticket.get/invoke"
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "-s", f.name, url]
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
    return float(rate[1]), float(rate[1]) * good / int(total[1])


def _shed(statuses: dict[int, int]) -> int:
    return sum(n for s, n in statuses.items() if not 200 <= s < 300)
