"""S4 observability cost: the same product with tracing + logs on and with them off.

Three products run side by side (each its own PostgreSQL, dispatch-api and bridge) and are
driven in turn, interleaved, with the same saturating load through the bridge:

- off: no exporter (spans are not recorded), logs at `warning` (no line per request);
- logs only: no exporter, a log line per request (the 1 % side's log share, apart);
- on, 1 %: OTLP export of 1 % of traces to a collector stand-in, a log line per request;
- on, 100 %: the same with every trace exported.

The collector stand-in accepts OTLP/HTTP and keeps the requests (the export's cost is the
services', not the collector's). Metrics cannot be switched off: both sides record them
(their share of a call is in the profile in the results file). Logs go to /dev/null.

To explain the 100 % figure, the run also measures the whole system's CPU per call (bridge,
dispatch-api, PostgreSQL) off and at 100 %, profiles the bridge at 100 %, and takes the
floor: the OpenTelemetry SDK alone recording and exporting the same spans
(bench/span_floor.py, on one call's trace as the collector received it). The floor's ratio
is off's CPU per call over off's plus the SDK's: the throughput ratio a CPU-bound system
would keep if recording those spans cost nothing beyond the SDK's own work.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from aiohttp import web

from bench import profile, span_floor
from bench._context import Bench, bridge_saturation, cpu_per_call, side_by_side
from bench._load import have_wrk
from bench._product import Product
from bench._report import Figure, figure
from testkit.processes import free_port


@asynccontextmanager
async def _collector() -> AsyncIterator[tuple[str, list[bytes]]]:
    received: list[bytes] = []

    async def traces(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(status=200, content_type="application/x-protobuf")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/v1/traces", received
    finally:
        await runner.cleanup()


async def run(bench: Bench) -> list[Figure]:
    sizes = bench.sizes
    async with _collector() as (endpoint, received), AsyncExitStack() as stack:

        def exported(ratio: str) -> dict[str, str]:
            return {
                "DISPATCH_TRACE_EXPORTER": "otlp",
                "DISPATCH_OTLP_ENDPOINT": endpoint,
                "DISPATCH_TRACE_SAMPLING_RATIO": ratio,
                "DISPATCH_LOG_LEVEL": "info",
            }

        envs = {
            "off": {"DISPATCH_TRACE_EXPORTER": "none", "DISPATCH_LOG_LEVEL": "warning"},
            # The 1 % side's parts apart: its log line per request, without any tracing.
            "logs": {"DISPATCH_TRACE_EXPORTER": "none", "DISPATCH_LOG_LEVEL": "info"},
            "1%": exported("0.01"),
            "100%": exported("1.0"),
        }
        products = {name: Product(env) for name, env in envs.items()}
        benches = await side_by_side(stack, bench, products)

        sampled, full, logs = [], [], []
        for _ in range(sizes.reps):
            off = await bridge_saturation(benches["off"])
            logs.append(await bridge_saturation(benches["logs"]) / off)
            sampled.append(await bridge_saturation(benches["1%"]) / off)
            full.append(await bridge_saturation(benches["100%"]) / off)
        await asyncio.sleep(6)  # the batch processors export every 5 s
        note = f"{len(received)} OTLP exports, {sum(map(len, received)) // 1024} KiB"
        explained = await _explained(bench, benches, endpoint, received)
    tool = "wrk" if have_wrk() else "aiohttp closed loop"
    return [
        figure(
            "S4", f"throughput, observability on (1 % traced) / off ({tool})", sampled, ">= 0.95"
        ),
        figure("S4", f"throughput, logs only (no tracing) / off ({tool})", logs, ""),
        figure("S4", f"throughput, on (100 % traced) / off ({tool})", full, ">= 0.8", note),
        *explained,
    ]


async def _explained(
    bench: Bench, benches: dict[str, Bench], endpoint: str, received: list[bytes]
) -> list[Figure]:
    """The 100 % figure's explanation: CPU per call off and on, the bridge's profile at
    100 %, and the SDK's floor for the same spans."""
    system = ("bridge", "api", "postgres")
    off, on, floor, spans = [], [], [], []
    shapes = span_floor.one_call(received)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(shapes, f)
    calls = 50 if bench.sizes.quick else 2000
    try:
        for _ in range(bench.sizes.reps):
            off.append(await cpu_per_call(benches["off"], benches["off"].calls["bridge"], *system))
            full = benches["100%"]
            on.append(await cpu_per_call(full, full.calls["bridge"], *system))
            before = len(received)
            floor.append(await _replayed(endpoint, calls, Path(f.name)))
            spans.append(span_floor.replayed_spans(received[before:]) / calls)
    finally:
        os.unlink(f.name)
    traced = await profile.sampled(
        benches["100%"],
        "bridge",
        "Bridge profile at 100 % tracing (S4)",
        "wrk (`ticket.get`), every call traced and exported",
        profile.wrk_load(benches["100%"]),
    )
    untraced = await profile.sampled(
        benches["off"],
        "bridge",
        "Bridge profile with observability off (S4)",
        "wrk (`ticket.get`), no span recorded, no request line",
        profile.wrk_load(benches["off"]),
    )
    title = "The bridge at 100 % tracing against the bridge with observability off (S4)"
    profile.compared(benches["100%"], title, traced, untraced, ("bridge at 100 %", "bridge off"))
    us = [1e6 * x for x in off], [1e6 * x for x in on], [1e6 * x for x in floor]
    names = ", ".join(f"{s['service']}: {s['name']}" for s in shapes)
    return [
        figure("S4", "whole system CPU per call, off (µs)", us[0], ""),
        figure("S4", "whole system CPU per call, on at 100 % (µs)", us[1], ""),
        figure(
            "S4",
            "OpenTelemetry SDK alone, the same spans recorded and exported, CPU per call (µs)",
            us[2],
            "",
            f"{len(shapes)} spans per call ({names})",
        ),
        figure("S4", "spans exported per replayed call (all kept: no queue drops)", spans, ""),
        figure(
            "S4",
            "floor of on (100 %) / off: off CPU / (off + SDK) per call",
            [a / (a + b) for a, b in zip(off, floor, strict=True)],
            "",
        ),
    ]


async def _replayed(endpoint: str, calls: int, trace: Path) -> float:
    done = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.span_floor",
        endpoint,
        str(calls),
        str(trace),
        stdout=subprocess.PIPE,
    )
    # Bounded: the replay paces 500 calls/s, and a collector that stopped answering would
    # otherwise leave the exporter retrying for good.
    out, _ = await asyncio.wait_for(done.communicate(), 60 + calls / 100)
    if done.returncode != 0:
        raise RuntimeError("S4: the span floor replay failed")
    return float(out)
