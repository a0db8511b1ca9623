"""S1 added latency, S2 hop efficiency, S5 transports: what the bridge adds to a call.

- S1: `ticket.get` through the bridge vs GET /v1/tickets/{id} straight to dispatch-api,
  sequential (low load): p50 and p99 differences, and the same for the minimal proxy
  (the floor of both).
- S2: bridge CPU per call vs a minimal aiohttp forwarding proxy (bench/proxy_floor.py, the
  floor for a Python hop), from the bench's own client (closed loop, concurrency 8) and at
  saturation (wrk, each side at its own maximum, where capacity per core is decided); the
  same against the observed proxy (the minimal proxy plus the per-call telemetry the
  contract requires: span, request line, ids, traceparent, tool metrics), the floor of a
  hop that keeps every log field, metric and trace; and saturation throughput (wrk)
  through the bridge vs dispatch-api alone, beside the same through either proxy (what
  any Python hop in front of dispatch-api leaves of its throughput on these cores). S1's
  added latency is read against the observed proxy's too.
- S5: MCP `tools/call` vs REST invoke of `ticket.get` (wrk throughput), and the cost of a
  call with invalid arguments vs a valid one: CPU per call of the whole system (bridge,
  dispatch-api, PostgreSQL), since what a rejection must save is the downstream work.
"""

from __future__ import annotations

import asyncio

from bench._context import Bench, cpu_per_call
from bench._load import closed_loop, have_wrk, latencies, percentile, wrk
from bench._report import Figure, figure
from bench.cpu import cpu_seconds
from bench.profile import wrk_load


async def run(bench: Bench) -> list[Figure]:
    sizes, calls, product = bench.sizes, bench.calls, bench.product
    for call in calls.values():  # warm-up
        await latencies(call, 50)

    async def saturation_cpu(name: str) -> float:
        """CPU per call (µs) of the `name` process ("bridge", "proxy") while wrk saturates
        it with `ticket.get` over REST: its CPU seconds over the calls wrk completed."""
        process = product.process(name)
        seconds = 1 if sizes.quick else sizes.seconds
        before = cpu_seconds(process)
        rate = await wrk_load(bench, name)(seconds)
        # wrk runs for whole seconds (bench/_load.py rounds the same way).
        return (cpu_seconds(process) - before) / (rate * max(1, round(seconds))) * 1e6

    async def saturation(name: str) -> float:
        """wrk's requests/s against one of the prepared targets; aiohttp closed loop when
        wrk is not installed (the table says which)."""
        if not have_wrk():
            return await closed_loop(calls[name], sizes.requests, sizes.concurrency)
        u, h = product.urls, bench.agent_headers
        target = {
            "direct": (f"{u['api']}/v1/tickets/{bench.ticket}", "GET", b"", bench.api_headers),
            "bridge": (
                u["bridge"] + "/v1/tools/ticket.get/invoke",
                "POST",
                bench.rest_body(bench.ticket),
                h,
            ),
            "mcp": (u["bridge"] + "/mcp", "POST", bench.mcp_body(bench.ticket), bench.mcp_headers),
            **{
                proxy: (
                    u[proxy] + "/v1/tools/ticket.get/invoke",
                    "POST",
                    bench.rest_body(bench.ticket),
                    h,
                )
                for proxy in ("proxy", "observed_proxy")
            },
        }[name]
        url, method, body, headers = target
        return await asyncio.to_thread(
            wrk,
            url,
            method=method,
            body=body,
            headers=headers,
            connections=sizes.concurrency,
            seconds=1 if sizes.quick else sizes.seconds,
        )

    p50, p99, floor_p50, floor_p99, cpu_ratio, through = [], [], [], [], [], []
    transports, invalid, bridge_us, proxy_us, invalid_bridge, p50_ratio = [], [], [], [], [], []
    saturated, observed_us, over_observed = [], [], []
    observed_p50, over_observed_p50, floor_through, observed_through = [], [], [], []
    for _ in range(sizes.reps):  # A B A B ...: drift hits both sides alike
        a = await latencies(calls["direct"], sizes.requests)
        b = await latencies(calls["bridge"], sizes.requests)
        p50.append(percentile(b, 0.5) - percentile(a, 0.5))
        p99.append(percentile(b, 0.99) - percentile(a, 0.99))
        c = await latencies(calls["proxy"], sizes.requests)
        floor_p50.append(percentile(c, 0.5) - percentile(a, 0.5))
        floor_p99.append(percentile(c, 0.99) - percentile(a, 0.99))
        # Issue 20: the hop's added latency against the floor any Python hop adds.
        p50_ratio.append(p50[-1] / max(floor_p50[-1], 1e-3))
        d = await latencies(calls["observed_proxy"], sizes.requests)
        observed_p50.append(percentile(d, 0.5) - percentile(a, 0.5))
        over_observed_p50.append(p50[-1] / max(observed_p50[-1], 1e-3))
        bridge_us.append(await cpu_per_call(bench, calls["bridge"], "bridge") * 1e6)
        proxy_us.append(await cpu_per_call(bench, calls["proxy"], "proxy") * 1e6)
        cpu_ratio.append(bridge_us[-1] / max(proxy_us[-1], 1e-3))
        observed_us.append(
            await cpu_per_call(bench, calls["observed_proxy"], "observed_proxy") * 1e6
        )
        over_observed.append(bridge_us[-1] / max(observed_us[-1], 1e-3))
        if have_wrk():
            saturated.append(await saturation_cpu("bridge") / await saturation_cpu("proxy"))
        alone = await saturation("direct")
        via = await saturation("bridge")
        through.append(via / alone)
        floor_through.append(await saturation("proxy") / alone)
        observed_through.append(await saturation("observed_proxy") / alone)
        rest = await saturation("bridge")
        mcp = await saturation("mcp")
        transports.append(mcp / rest)
        system = ("bridge", "api", "postgres")
        good = await cpu_per_call(bench, calls["bridge"], *system)
        bad = await cpu_per_call(bench, calls["bridge_invalid"], *system)
        invalid.append(bad / max(good, 1e-9))
        invalid_bridge.append(
            await cpu_per_call(bench, calls["bridge_invalid"], "bridge")
            / max(await cpu_per_call(bench, calls["bridge"], "bridge"), 1e-9)
        )
    tool = "wrk" if have_wrk() else "aiohttp closed loop"
    return [
        figure("S1", "bridge / minimal proxy added latency p50", p50_ratio, "<= 1.3"),
        figure("S1", "bridge added latency p50 (ms)", p50, ""),
        figure("S1", "bridge added latency p99 (ms)", p99, "<= 1.0"),
        figure("S1", "minimal proxy added latency p50 (ms), the floor", floor_p50, ""),
        figure("S1", "minimal proxy added latency p99 (ms), the floor", floor_p99, ""),
        figure(
            "S1",
            "observed proxy added latency p50 (ms), the floor with telemetry",
            observed_p50,
            "",
        ),
        figure("S1", "bridge / observed proxy added latency p50", over_observed_p50, ""),
        figure("S2", "bridge / minimal proxy CPU per call", cpu_ratio, "<= 1.5"),
        figure("S2", "bridge CPU per call (µs)", bridge_us, ""),
        *(
            [figure("S2", "bridge / minimal proxy CPU per call at saturation (wrk)", saturated, "")]
            if saturated
            else []
        ),
        figure("S2", "minimal proxy CPU per call (µs)", proxy_us, ""),
        figure("S2", "observed proxy CPU per call (µs), the floor with telemetry", observed_us, ""),
        figure("S2", "bridge / observed proxy CPU per call", over_observed, ""),
        figure("S2", f"throughput via bridge / dispatch-api alone ({tool})", through, ">= 0.7"),
        figure(
            "S2",
            f"throughput via minimal proxy / dispatch-api alone ({tool}), the floor",
            floor_through,
            "",
        ),
        figure(
            "S2",
            f"throughput via observed proxy / dispatch-api alone ({tool}), the floor with"
            " telemetry",
            observed_through,
            "",
        ),
        figure("S5", f"MCP / REST throughput ({tool})", transports, ">= 0.95"),
        figure(
            "S5",
            "invalid / valid call, CPU per call (bridge + dispatch-api + postgres)",
            invalid,
            "<= 0.33",
        ),
        figure("S5", "invalid / valid call, bridge CPU alone", invalid_bridge, ""),
    ]
