"""Peer: our MCP endpoint vs the same tools on the official `mcp` package's own server.

The peer (bench/peer_server.py) is `MCPServer` (mcp 2.x; formerly `FastMCP`) on uvicorn, one
worker, Streamable HTTP with `stateless_http=True` and `json_response=True`, forwarding to
the same dispatch-api with one shared `httpx2.AsyncClient`, as the SDK's docs show.

Both sides get the same request: the fixed `tools/call` of `ticket.get` that
`bench.calls["mcp"]` sends (`MCP-Protocol-Version: 2025-11-25`, no `initialize`: neither
server keeps sessions, so a real client's handshake would be one extra, unmeasured POST).
The 2026-07-28 form of the same call (no handshake by design; `params._meta` plus the
`Mcp-Method`/`Mcp-Name` headers), which both servers also answer, is measured too,
without a target.

Per repetition, A (ours) then B (peer) each time: saturation throughput (wrk, one thread,
`concurrency` connections; aiohttp closed loop without wrk) with the server process's CPU
per call, then sequential latency (p50). dispatch-api alone is measured in the same
repetition (throughput and p50): the ceiling and the floor of both sides, which forward to it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from typing import IO, Any

import orjson
import psutil

from bench._context import Bench
from bench._load import Call, closed_loop, have_wrk, latencies, percentile, wrk
from bench._report import Figure, figure
from bench.cpu import cpu_seconds
from testkit.processes import free_port

MODERN = "2026-07-28"


class _Target:
    """One fixed POST (or GET) and the process that serves it."""

    def __init__(
        self,
        bench: Bench,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        process: psutil.Process,
        method: str = "POST",
    ) -> None:
        self.bench, self.url, self.body, self.headers = bench, url, body, dict(headers)
        self.process, self.method = process, method
        self.call: Call = (
            bench.post(url, body, self.headers)
            if method == "POST"
            else bench.get(url, self.headers)
        )

    async def saturate(self) -> tuple[float, float]:
        """(calls per second, server CPU seconds per call) under closed-loop saturation."""
        sizes = self.bench.sizes
        seconds = 1.0 if sizes.quick else sizes.seconds
        before = cpu_seconds(self.process)
        if have_wrk():
            rate = await asyncio.to_thread(
                wrk,
                self.url,
                method=self.method,
                body=self.body,
                headers=self.headers,
                connections=sizes.concurrency,
                seconds=seconds,
            )
            calls = rate * max(1, round(seconds))  # wrk runs whole seconds
        else:
            calls = max(sizes.requests, 20)
            rate = await closed_loop(self.call, calls, sizes.concurrency)
        cpu = cpu_seconds(self.process) - before
        return rate, cpu / max(calls, 1.0)

    async def p50(self) -> float:
        return percentile(await latencies(self.call, self.bench.sizes.requests), 0.5)

    async def check(self, ticket: str) -> None:
        """Fail loudly unless this answers `ticket.get` with the ticket itself."""
        async with self.bench.http.post(self.url, data=self.body, headers=self.headers) as r:
            raw = await r.read()
            status = r.status
        try:
            result = orjson.loads(raw)["result"]
            found = result["structuredContent"]["ticket"]["id"]
            ok = status == 200 and not result.get("isError") and found == ticket
        except (orjson.JSONDecodeError, KeyError, TypeError):
            ok = False
        if not ok:
            raise RuntimeError(f"{self.url} did not return ticket {ticket}: {status} {raw[:500]!r}")


def _modern(bench: Bench) -> tuple[bytes, dict[str, str]]:
    """The same call in the 2026-07-28 form: no handshake, version and capabilities in
    `params._meta`, mirrored in headers."""
    body: dict[str, Any] = orjson.loads(bench.mcp_body(bench.ticket))
    body["params"]["_meta"] = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    headers = {
        **bench.mcp_headers,
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": "ticket.get",
    }
    return orjson.dumps(body), headers


async def _wait_ready(peer: _Target, proc: asyncio.subprocess.Process, log: IO[bytes]) -> None:
    for _ in range(600):  # a minute: importing mcp is slow on a busy machine
        if proc.returncode is not None:
            break
        try:
            await peer.call()
            return
        except OSError:  # aiohttp's ClientConnectorError is one: not listening yet
            await asyncio.sleep(0.1)
    log.seek(0)
    raise RuntimeError(f"the peer MCP server did not start:\n{log.read().decode()[-2000:]}")


async def run(bench: Bench) -> list[Figure]:
    product = bench.product
    port = free_port()
    with tempfile.TemporaryFile() as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.peer_server",
            str(port),
            product.urls["api"],
            product.secrets["gateway_token"],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            return await _measure(bench, port, proc, log)
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


async def _measure(
    bench: Bench, port: int, proc: asyncio.subprocess.Process, log: IO[bytes]
) -> list[Figure]:
    sizes, product = bench.sizes, bench.product
    bridge, peer_process = product.process("bridge"), psutil.Process(proc.pid)
    ours_url, peer_url = product.urls["bridge"] + "/mcp", f"http://127.0.0.1:{port}/mcp"
    body, headers = bench.mcp_body(bench.ticket), bench.mcp_headers
    modern_body, modern_headers = _modern(bench)
    ours = _Target(bench, ours_url, body, headers, bridge)
    peer = _Target(bench, peer_url, body, headers, peer_process)
    ours_modern = _Target(bench, ours_url, modern_body, modern_headers, bridge)
    peer_modern = _Target(bench, peer_url, modern_body, modern_headers, peer_process)
    api = _Target(
        bench,
        f"{product.urls['api']}/v1/tickets/{bench.ticket}",
        b"",
        bench.api_headers,
        product.process("api"),
        method="GET",
    )
    await _wait_ready(peer, proc, log)
    for target in (ours, peer, ours_modern, peer_modern):
        await target.check(bench.ticket)
    for target in (ours, peer, ours_modern, peer_modern):  # warm-up
        await latencies(target.call, 10 if sizes.quick else 200)

    rate: dict[str, list[float]] = {k: [] for k in ("ours", "peer", "api")}
    cpu: dict[str, list[float]] = {k: [] for k in ("ours", "peer")}
    p50: dict[str, list[float]] = {k: [] for k in ("ours", "peer", "api")}
    through, latency, cpu_ratio, through_m, latency_m = [], [], [], [], []
    for _ in range(sizes.reps):  # A B A B ...: drift hits both sides alike
        a, a_cpu = await ours.saturate()
        b, b_cpu = await peer.saturate()
        rate["ours"].append(a)
        rate["peer"].append(b)
        cpu["ours"].append(a_cpu * 1000)
        cpu["peer"].append(b_cpu * 1000)
        through.append(a / b)
        cpu_ratio.append(a_cpu / max(b_cpu, 1e-9))
        a_p50, b_p50 = await ours.p50(), await peer.p50()
        p50["ours"].append(a_p50)
        p50["peer"].append(b_p50)
        latency.append(a_p50 / b_p50)
        (am, _), (bm, _) = await ours_modern.saturate(), await peer_modern.saturate()
        through_m.append(am / bm)
        latency_m.append(await ours_modern.p50() / await peer_modern.p50())
        rate["api"].append((await api.saturate())[0])
        p50["api"].append(await api.p50())
    for target in (ours, peer):  # still answering the ticket after the load
        await target.check(bench.ticket)

    tool = "wrk" if have_wrk() else "aiohttp closed loop"
    same = "ticket.get, MCP-Protocol-Version 2025-11-25 (bench.calls['mcp'])"
    modern = "the same call on 2026-07-28 (no handshake)"
    return [
        figure("Peer", f"our MCP / peer MCP throughput ({tool})", through, ">= 5", same),
        figure("Peer", "our p50 / peer p50 (sequential)", latency, "<= 0.33", same),
        figure("Peer", "our / peer server CPU per call", cpu_ratio, ""),
        figure("Peer", f"our MCP throughput (calls/s, {tool})", rate["ours"], ""),
        figure("Peer", f"peer MCP throughput (calls/s, {tool})", rate["peer"], ""),
        figure("Peer", "dispatch-api alone throughput (calls/s)", rate["api"], "", "ceiling"),
        figure("Peer", "our p50 (ms)", p50["ours"], ""),
        figure("Peer", "peer p50 (ms)", p50["peer"], ""),
        figure("Peer", "dispatch-api alone p50 (ms)", p50["api"], "", "floor of both"),
        figure("Peer", "our CPU per call (ms)", cpu["ours"], "", "bridge process"),
        figure("Peer", "peer CPU per call (ms)", cpu["peer"], "", "uvicorn process"),
        figure("Peer", f"our / peer throughput, {MODERN}", through_m, "", modern),
        figure("Peer", f"our p50 / peer p50, {MODERN}", latency_m, "", modern),
    ]
