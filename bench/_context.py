"""What every scenario gets: the running product, one client session, the sizes of this run,
and ready-made calls (each returns its HTTP status)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson

from bench._load import Call, closed_loop, have_wrk, latencies, wrk
from bench._product import Product
from bench.cpu import cpu_seconds


@dataclass(frozen=True, slots=True)
class Sizes:
    requests: int = 300  # per side, per repetition
    reps: int = 5
    concurrency: int = 8
    seconds: float = 3.0  # per wrk / open-loop run

    @property
    def quick(self) -> bool:
        """A smoke run (CI): every scenario runs, none long enough to mean anything."""
        return self.requests < 50


@dataclass
class Bench:
    product: Product
    http: aiohttp.ClientSession
    sizes: Sizes
    out: Path = Path("bench/results")
    ticket: str = ""
    calls: dict[str, Call] = field(default_factory=dict)
    #: Free-text sections for the results file (title -> markdown), e.g. profiles.
    sections: dict[str, str] = field(default_factory=dict)

    @property
    def agent_headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.product.secrets['agent_key']}",
            "Content-Type": "application/json",
        }

    @property
    def api_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.product.secrets['api_token']}"}

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> Call:
        http = self.http

        async def call() -> int:
            async with http.post(url, data=body, headers=headers) as resp:
                await resp.read()
                return resp.status

        return call

    def get(self, url: str, headers: dict[str, str]) -> Call:
        http = self.http

        async def call() -> int:
            async with http.get(url, headers=headers) as resp:
                await resp.read()
                return resp.status

        return call

    async def prepare(self) -> None:
        """Create the ticket the read scenarios read and the calls they make."""
        urls = self.product.urls
        async with self.http.post(
            urls["bridge"] + "/v1/tools/ticket.create/invoke",
            json={"arguments": {"customer_name": "Bench", "priority": "P3"}},
            headers=self.agent_headers,
        ) as r:
            self.ticket = (await r.json())["result"]["ticket"]["id"]
        self.calls = {
            "direct": self.get(f"{urls['api']}/v1/tickets/{self.ticket}", self.api_headers),
            "bridge": self.post(
                urls["bridge"] + "/v1/tools/ticket.get/invoke",
                self.rest_body(self.ticket),
                self.agent_headers,
            ),
            "bridge_invalid": self.post(
                urls["bridge"] + "/v1/tools/ticket.get/invoke",
                self.rest_body("not-a-uuid"),
                self.agent_headers,
            ),
            "mcp": self.post(urls["bridge"] + "/mcp", self.mcp_body(self.ticket), self.mcp_headers),
            "proxy": self.post(
                urls["proxy"] + "/v1/tools/ticket.get/invoke",
                self.rest_body(self.ticket),
                self.agent_headers,
            ),
        }
        if "observed_proxy" in urls:  # S2's second floor, started by the harness's product
            self.calls["observed_proxy"] = self.post(
                urls["observed_proxy"] + "/v1/tools/ticket.get/invoke",
                self.rest_body(self.ticket),
                self.agent_headers,
            )

    @staticmethod
    def rest_body(ticket: str) -> bytes:
        return orjson.dumps({"arguments": {"ticket_id": ticket}})

    @staticmethod
    def mcp_body(ticket: str) -> bytes:
        return orjson.dumps(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {"name": "ticket.get", "arguments": {"ticket_id": ticket}},
            }
        )

    @property
    def mcp_headers(self) -> dict[str, str]:
        return {
            **self.agent_headers,
            "MCP-Protocol-Version": "2025-11-25",
            "Accept": "application/json, text/event-stream",
        }


async def side_by_side(
    stack: AsyncExitStack, bench: Bench, products: Mapping[str, Product]
) -> dict[str, Bench]:
    """Start `products` together (stopped by `stack`), each prepared and warmed up, for
    scenarios that drive several configurations of the whole product in turn."""
    started = await asyncio.gather(*(stack.enter_async_context(p) for p in products.values()))
    benches = {
        name: Bench(product, bench.http, bench.sizes, out=bench.out, sections=bench.sections)
        for name, product in zip(products, started, strict=True)
    }
    for b in benches.values():
        await b.prepare()
        await latencies(b.calls["bridge"], 50)  # warm-up
    return benches


async def bridge_saturation(
    b: Bench, connections: int | None = None, requests: int | None = None
) -> float:
    """Calls/s through `b`'s bridge (`ticket.get` over REST) at saturation: wrk, or an
    aiohttp closed loop of `requests` calls when wrk is not installed (the tables say
    which)."""
    sizes = b.sizes
    connections = connections or sizes.concurrency
    if not have_wrk():
        return await closed_loop(b.calls["bridge"], requests or sizes.requests, connections)
    return await asyncio.to_thread(
        wrk,
        b.product.urls["bridge"] + "/v1/tools/ticket.get/invoke",
        method="POST",
        body=b.rest_body(b.ticket),
        headers=b.agent_headers,
        connections=connections,
        seconds=1 if sizes.quick else sizes.seconds,
    )


async def cpu_per_call(b: Bench, call: Call, *names: str) -> float:
    """CPU seconds per call of `b`'s named processes (postgres: the server and its
    backends) over a closed loop of `call`."""
    # CPU times tick every 10 ms: measure over enough calls to resolve a ratio.
    n = max(b.sizes.requests * 2, 20 if b.sizes.quick else 1000)
    procs = [(b.product.process(name), name == "postgres") for name in names]
    before = sum(cpu_seconds(p, tree=tree) for p, tree in procs)
    await closed_loop(call, n, b.sizes.concurrency)
    return (sum(cpu_seconds(p, tree=tree) for p, tree in procs) - before) / n
