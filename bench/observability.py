"""S4 observability cost: the same product with tracing + logs on and with them off.

Three products run side by side (each its own PostgreSQL, dispatch-api and bridge) and are
driven in turn, interleaved, with the same saturating load through the bridge:

- off: no exporter (spans are not recorded), logs at `warning` (no line per request);
- on, 1 %: OTLP export of 1 % of traces to a collector stand-in, a log line per request;
- on, 100 %: the same with every trace exported.

The collector stand-in accepts OTLP/HTTP and discards it (the export's cost is the
services', not the collector's). Metrics cannot be switched off: both sides record them
(their share of a call is in the profile in the results file). Logs go to /dev/null.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from aiohttp import web

from bench._context import Bench, bridge_saturation, side_by_side
from bench._load import have_wrk
from bench._product import Product
from bench._report import Figure, figure
from testkit.processes import free_port


@asynccontextmanager
async def _collector() -> AsyncIterator[tuple[str, list[int]]]:
    received: list[int] = []

    async def traces(request: web.Request) -> web.Response:
        received.append(len(await request.read()))
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
            "1%": exported("0.01"),
            "100%": exported("1.0"),
        }
        products = {name: Product(env) for name, env in envs.items()}
        benches = await side_by_side(stack, bench, products)

        sampled, full = [], []
        for _ in range(sizes.reps):
            off = await bridge_saturation(benches["off"])
            sampled.append(await bridge_saturation(benches["1%"]) / off)
            full.append(await bridge_saturation(benches["100%"]) / off)
        await asyncio.sleep(6)  # the batch processors export every 5 s
    tool = "wrk" if have_wrk() else "aiohttp closed loop"
    note = f"{len(received)} OTLP exports, {sum(received) // 1024} KiB"
    return [
        figure(
            "S4", f"throughput, observability on (1 % traced) / off ({tool})", sampled, ">= 0.95"
        ),
        figure("S4", f"throughput, on (100 % traced) / off ({tool})", full, ">= 0.8", note),
    ]
