"""Side-by-side benchmarks of the running product: ratios, not absolute times.

Starts dispatch-api and the bridge as two processes (on an embedded PostgreSQL), then runs
each comparison interleaved (A B A B ...) for several repetitions after a warm-up, and
reports medians with min and max. Writes bench/results/latest.md and .json.

Scenarios so far (issue 8 lists more):
- S1 added latency: `ticket.get` through the bridge vs GET /v1/tickets/{id} straight to
  dispatch-api, sequential (low load): p50 and p99 differences.
- S2 hop efficiency: bridge CPU per call vs a minimal aiohttp forwarding proxy (the floor
  for a Python hop, bench/proxy_floor.py), and throughput through the bridge vs dispatch-api
  alone (closed loop).
- S5 transports: MCP `tools/call` vs REST invoke of `ticket.get` (throughput ratio, closed
  loop), and the cost of a call with invalid arguments vs a valid one.

    python -m bench.harness [--requests 300] [--reps 5] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from hashlib import sha256
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from dispatch_api.domain import Role
from dispatch_api.store import connect, migrate, principals, start_embedded, templates

RESULTS = Path(__file__).parent / "results"
Call = Callable[[], Awaitable[None]]


def _digest(key: str) -> str:
    return sha256(key.encode()).hexdigest()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Product:
    """dispatch-api and the bridge as two processes (`serve-api`, `serve-bridge`), as in
    production, on an embedded PostgreSQL this harness starts and prepares."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="dispatch-bench-"))
        self.procs: list[asyncio.subprocess.Process] = []
        self.creds: dict[str, str] = {}

    async def __aenter__(self) -> Product:
        dsn = start_embedded(self.folder / "pg", delete_on_exit=True)
        api_token, gateway_token, agent_key = (principals.new_token() for _ in range(3))
        conn = await connect(dsn)
        try:
            await migrate(conn)
            await templates.seed(conn, templates.read_template_file(None))
            await principals.upsert(conn, "bench", Role.SUPERVISOR, api_token)
            await principals.upsert(
                conn, "bridge", Role.GATEWAY, gateway_token, trusted_gateway=True
            )
        finally:
            await conn.close()
        api_port, bridge_port = _free_port(), _free_port()
        api_url = f"http://127.0.0.1:{api_port}"
        env = {
            **os.environ,
            "DISPATCH_DATABASE_URL": dsn,
            "DISPATCH_API_PORT": str(api_port),
            "DISPATCH_BRIDGE_PORT": str(bridge_port),
            "DISPATCH_API_URL": api_url,
            "DISPATCH_GATEWAY_TOKEN": gateway_token,
            "DISPATCH_AGENT_KEYS": f"bench-agent:supervisor:{_digest(agent_key)}",
            "DISPATCH_RATE_LIMIT_PER_S": "1000000",
            "DISPATCH_RATE_LIMIT_BURST": "1000000",
        }
        cli = str(Path(sys.executable).parent / "dispatch-bridge")
        proxy_port = _free_port()
        for args in (
            (cli, "serve-api"),
            (cli, "serve-bridge"),
            (sys.executable, "-m", "bench.proxy_floor", str(proxy_port), api_url, gateway_token),
        ):
            self.procs.append(
                await asyncio.create_subprocess_exec(
                    *args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
        self.creds = {
            "api_url": api_url,
            "proxy_url": f"http://127.0.0.1:{proxy_port}",
            "bridge_url": f"http://127.0.0.1:{bridge_port}",
            "api_token": api_token,
            "agent_key": agent_key,
        }
        async with aiohttp.ClientSession() as http:
            for _ in range(600):
                try:
                    async with http.get(self.creds["bridge_url"] + "/readyz") as r:
                        ready = r.status == 200
                    async with http.post(self.creds["proxy_url"] + "/") as r:
                        ready = ready and r.status == 404  # listening
                    if ready:
                        return self
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError("the services did not become ready")

    async def __aexit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            await asyncio.wait_for(proc.wait(), 30)


async def _latencies(call: Call, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        out.append((time.perf_counter() - started) * 1000)
    return out


async def _throughput(call: Call, n: int, concurrency: int) -> float:
    remaining = n

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - started)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


async def run(requests: int, reps: int, concurrency: int) -> dict[str, Any]:
    async with Product() as product:
        c = product.creds
        agent = {"Authorization": f"Bearer {c['agent_key']}", "Content-Type": "application/json"}
        api = {"Authorization": f"Bearer {c['api_token']}"}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:
            async with http.post(
                c["bridge_url"] + "/v1/tools/ticket.create/invoke",
                json={"arguments": {"customer_name": "Bench", "priority": "P3"}},
                headers=agent,
            ) as r:
                ticket = (await r.json())["result"]["ticket"]["id"]
            invoke = c["bridge_url"] + "/v1/tools/ticket.get/invoke"
            valid = json.dumps({"arguments": {"ticket_id": ticket}}).encode()
            invalid = json.dumps({"arguments": {"ticket_id": "not-a-uuid"}}).encode()
            mcp_body = json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "tools/call",
                    "params": {"name": "ticket.get", "arguments": {"ticket_id": ticket}},
                }
            ).encode()
            mcp_headers = {
                **agent,
                "MCP-Protocol-Version": "2025-11-25",
                "Accept": "application/json, text/event-stream",
            }

            def post(url: str, body: bytes, headers: dict[str, str]) -> Call:
                async def call() -> None:
                    async with http.post(url, data=body, headers=headers) as resp:
                        await resp.read()

                return call

            async def direct() -> None:
                async with http.get(f"{c['api_url']}/v1/tickets/{ticket}", headers=api) as resp:
                    await resp.read()

            bridge_get = post(invoke, valid, agent)
            proxy_get = post(c["proxy_url"] + "/v1/tools/ticket.get/invoke", valid, agent)
            bridge_bad = post(invoke, invalid, agent)
            mcp_get = post(c["bridge_url"] + "/mcp", mcp_body, mcp_headers)

            for call in (direct, bridge_get, bridge_bad, mcp_get, proxy_get):  # warm-up
                await _latencies(call, 50)

            s1: dict[str, list[float]] = {"p50": [], "p99": []}
            s5_ratio, s5_invalid = [], []
            s2_cpu, s2_throughput = [], []
            bridge_proc = psutil.Process(product.procs[1].pid)
            proxy_proc = psutil.Process(product.procs[2].pid)

            # CPU times tick every 10 ms: measure over enough calls to resolve a ratio.
            cpu_calls = max(requests, 300)

            async def cpu_per_call(proc: psutil.Process, call: Call) -> float:
                before = sum(proc.cpu_times()[:2])
                await _throughput(call, cpu_calls, concurrency)
                return (sum(proc.cpu_times()[:2]) - before) / cpu_calls

            for _ in range(reps):  # A B A B ...: drift hits both sides alike
                a = await _latencies(direct, requests)
                b = await _latencies(bridge_get, requests)
                s1["p50"].append(_pct(b, 0.5) - _pct(a, 0.5))
                s1["p99"].append(_pct(b, 0.99) - _pct(a, 0.99))
                rest = await _throughput(bridge_get, requests, concurrency)
                mcp = await _throughput(mcp_get, requests, concurrency)
                s5_ratio.append(mcp / rest)
                s2_cpu.append(
                    await cpu_per_call(bridge_proc, bridge_get)
                    / await cpu_per_call(proxy_proc, proxy_get)
                )
                alone = await _throughput(direct, requests, concurrency)
                through = await _throughput(bridge_get, requests, concurrency)
                s2_throughput.append(through / alone)
                good = await _latencies(bridge_get, requests)
                bad = await _latencies(bridge_bad, requests)
                s5_invalid.append(statistics.median(bad) / statistics.median(good))
    return {
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "method": {
            "requests_per_side": requests,
            "repetitions": reps,
            "concurrency": concurrency,
            "load_generator": "aiohttp, same machine",
        },
        "scenarios": [
            {
                "id": "S1",
                "figure": "bridge added latency p50 (ms)",
                **_summary(s1["p50"]),
                "target": "<= 0.3",
                "met": statistics.median(s1["p50"]) <= 0.3,
            },
            {
                "id": "S1",
                "figure": "bridge added latency p99 (ms)",
                **_summary(s1["p99"]),
                "target": "<= 1.0",
                "met": statistics.median(s1["p99"]) <= 1.0,
            },
            {
                "id": "S2",
                "figure": "bridge / minimal proxy CPU per call",
                **_summary(s2_cpu),
                "target": "<= 1.5",
                "met": statistics.median(s2_cpu) <= 1.5,
            },
            {
                "id": "S2",
                "figure": "throughput via bridge / dispatch-api alone",
                **_summary(s2_throughput),
                "target": ">= 0.7",
                "met": statistics.median(s2_throughput) >= 0.7,
            },
            {
                "id": "S5",
                "figure": "MCP / REST throughput",
                **_summary(s5_ratio),
                "target": ">= 0.95",
                "met": statistics.median(s5_ratio) >= 0.95,
            },
            {
                "id": "S5",
                "figure": "invalid / valid call cost",
                **_summary(s5_invalid),
                "target": "<= 0.33",
                "met": statistics.median(s5_invalid) <= 1 / 3,
            },
        ],
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Benchmarks (bench/harness.py)",
        "",
        f"Machine: {report['machine']}; method: {report['method']}. Each figure is the median"
        " over the repetitions (min .. max), sides interleaved.",
        "",
        "| scenario | figure | median | min .. max | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for s in report["scenarios"]:
        lines.append(
            f"| {s['id']} | {s['figure']} | {s['median']} | {s['min']} .. {s['max']} |"
            f" {s['target']} | {'yes' if s['met'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    report = asyncio.run(run(args.requests, args.reps, args.concurrency))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "latest.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
