"""Memory: the bridge's RSS with 2,000 tool calls in flight against a slow downstream.

Targets (issue 20): peak RSS <= 150 MB while 2,000 calls wait on dispatch-api, and RSS 2 s
after they have finished <= 1.3x the baseline.

The bridge under test is a real `dispatch-bridge serve-bridge` process of its own, started
here; its downstream is a fake dispatch-api served from this process, which answers
`GET /v1/tickets/{id}` (with the body of a real ticket of the product) only after `SLOW_S`
seconds, so that every call stays open in the bridge. The bridge's retry policy is loosened
(one try, a per-try timeout and deadline far above the slow answer) so none times out, and
its admission limit (`DISPATCH_MAX_IN_FLIGHT`, default 256) is raised to the number of calls,
else it would refuse the rest at once with 429 `bridge_at_capacity` and 2,000 calls could
never be in flight. Its connection pool to dispatch-api keeps its own default
(`DISPATCH_API_MAX_CONNECTIONS`, 128; set it in the environment to compare): the calls
beyond it wait in the bridge for a connection, so a burst takes `CALLS / pool` waves of
`SLOW_S`. The bridge gets the image's allocator settings (`testkit.image.ALLOCATOR_ENV`,
as `bench._product.Product` gives every service), so what is measured is what ships.

Per repetition: fire `CALLS` concurrent `ticket.get` invocations (REST), sample the bridge's
RSS every 50 ms while they are in flight, count the calls in flight (gauge
`tool_calls_in_flight` on /metrics, and `GET /v1/ops/inflight` once), check every answer is
200 with `ok: true`, close the load generator's connections, and measure RSS again 2 s later
(the target) and 17 s later (once the bridge's idle pooled connections have expired). Ratios
are to the baseline taken once after a warm-up, before the first burst, so growth across
repetitions counts against them.

Then once more with pymalloc, Python's default (one repetition, no target): the image sets
`PYTHONMALLOC=malloc` because with pymalloc the burst's memory stays in 1 MiB arenas that
one surviving object pins, a floor of 1.6-1.8x the baseline that no trim can lower; with
glibc malloc for every object the bridge's idle trim (`DISPATCH_IDLE_TRIM_MB`,
bridge/_trim.py) gives it back. The Alloc rows measure the price in throughput.

`BENCH_MEMORY_CALLS` and `BENCH_MEMORY_SLOW_S` override the sizes (defaults: 2,000 calls and
5 s; 200 calls and 0.5 s in a quick run).
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil
from aiohttp import web

from bench._context import Bench
from bench._report import Figure, figure
from testkit.image import ALLOCATOR_ENV, without_allocator_env
from testkit.processes import free_port

CALLS, SLOW_S = 2000, 5.0
QUICK_CALLS, QUICK_SLOW_S = 200, 0.5
SAMPLE_S = 0.05
SETTLE_S = 2.0  # after a burst, before measuring again
IDLE_S = 17.0  # past aiohttp's 15 s keep-alive of the bridge's idle pooled connections
MB = 1024 * 1024
_IN_FLIGHT = re.compile(r'^tool_calls_in_flight\{tool="ticket\.get"\} (\S+)$', re.M)


@dataclass
class SlowDownstream:
    """A fake dispatch-api: `/readyz` at once, `GET /v1/tickets/{id}` after `delay_s`."""

    ticket: dict[str, Any]
    delay_s: float
    port: int = field(default_factory=free_port)
    active: int = 0
    peak: int = 0
    served: int = 0
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _ticket(self, request: web.Request) -> web.Response:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(self.delay_s)
            body = {**self.ticket, "id": request.match_info["id"]}
            self.served += 1
            return web.Response(body=orjson.dumps(body), content_type="application/json")
        finally:
            self.active -= 1

    async def _ready(self, request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ready"}', content_type="application/json")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/readyz", self._ready)
        app.router.add_get("/v1/tickets/{id}", self._ticket)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        # A deep backlog: the bridge may open many connections at once.
        await web.TCPSite(self.runner, "127.0.0.1", self.port, backlog=4096).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


class Bridge:
    """`dispatch-bridge serve-bridge` in a process of its own, pointed at `api_url`."""

    def __init__(
        self,
        api_url: str,
        timeout_s: float,
        max_in_flight: int,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="dispatch-bench-memory-"))
        self.key = secrets.token_urlsafe(32)
        self.supervisor_key = secrets.token_urlsafe(32)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_url = api_url
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        self.extra_env = extra_env or {}
        self.proc: asyncio.subprocess.Process | None = None

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}", "Content-Type": "application/json"}

    async def start(self) -> None:
        config = self.folder / "bridge.toml"
        config.write_text(
            "[retry]\n"
            "max_attempts = 1\n"
            f"per_try_timeout_s = {self.timeout_s}\n"
            f"deadline_s = {self.timeout_s}\n"
        )
        keys = [
            f"memory-agent:dispatcher:{sha256(self.key.encode()).hexdigest()}",
            f"memory-ops:supervisor:{sha256(self.supervisor_key.encode()).hexdigest()}",
        ]
        env = {
            **without_allocator_env(),
            **ALLOCATOR_ENV,
            "DISPATCH_API_URL": self.api_url,
            "DISPATCH_GATEWAY_TOKEN": secrets.token_urlsafe(32),
            "DISPATCH_AGENT_KEYS": ",".join(keys),
            "DISPATCH_BRIDGE_PORT": str(self.port),
            "DISPATCH_RATE_LIMIT_PER_S": "1000000",
            "DISPATCH_RATE_LIMIT_BURST": "1000000",
            # Admission control would refuse calls beyond it (429 bridge_at_capacity), and
            # the adaptive limit beyond what a slow dispatch-api's latency leaves it: a
            # floor as high as the cap makes it a fixed one.
            "DISPATCH_MAX_IN_FLIGHT": str(self.max_in_flight),
            "DISPATCH_MIN_IN_FLIGHT": str(self.max_in_flight),
            # All the calls come from one key: its per-key cap must not refuse them either.
            "DISPATCH_AGENT_MAX_IN_FLIGHT": str(self.max_in_flight),
            "DISPATCH_AGENT_MAX_BYTES_PER_S": str(2**40),
            # 2,000 calls arriving at once lag the loop for a moment: the overload guard
            # would refuse some, and the burst this scenario weighs would not be whole.
            "DISPATCH_MAX_LOOP_LAG_MS": "0",
            # Each call comes on a connection of its own (plus the probe's): the server's
            # connection cap (default 1,024) would answer the rest 503 too_many_connections.
            "DISPATCH_MAX_CONNECTIONS": str(self.max_in_flight + 64),
            **self.extra_env,
        }
        cli = str(Path(sys.executable).parent / "dispatch-bridge")
        self.proc = await asyncio.create_subprocess_exec(
            cli,
            "--config",
            str(config),
            "serve-bridge",
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        async with aiohttp.ClientSession() as http:
            for _ in range(600):
                if self.proc.returncode is not None:
                    break
                try:
                    async with http.get(self.url + "/readyz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"the memory bridge did not become ready (exit {self.proc.returncode})")

    def rss(self) -> int:
        assert self.proc is not None
        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def high_water(self) -> int:
        """VmHWM: the process's peak RSS since it started (Linux), 0 elsewhere."""
        assert self.proc is not None
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return 0
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
        return int(match.group(1)) * 1024 if match else 0

    async def stop(self) -> None:
        try:
            if self.proc is not None and self.proc.returncode is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(self.proc.wait(), 30)
                except TimeoutError:
                    self.proc.kill()
                    await self.proc.wait()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class Burst:
    peak_rss: int = 0
    in_flight_gauge: int = 0
    in_flight_ops: int = 0
    downstream_peak: int = 0


def _client(timeout_s: float) -> aiohttp.ClientSession:
    """A load-generator session: no connection limit, one connection per concurrent call."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=timeout_s + 60),
    )


async def _invoke(http: aiohttp.ClientSession, url: str, body: bytes, headers: Any) -> str | None:
    """None when the call answered 200 with `ok: true`, else what it answered instead."""
    try:
        async with http.post(url, data=body, headers=headers) as resp:
            raw = await resp.read()
            if resp.status == 200 and orjson.loads(raw).get("ok") is True:
                return None
            return f"{resp.status} {raw[:200].decode(errors='replace')}"
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return repr(exc)[:200]


async def _calls(http: aiohttp.ClientSession, bridge: Bridge, bench: Bench, n: int) -> None:
    """`n` concurrent `ticket.get` invocations; RuntimeError unless every one answered ok."""
    url, body = bridge.url + "/v1/tools/ticket.get/invoke", bench.rest_body(bench.ticket)
    headers = bridge.headers()
    results = await asyncio.gather(*(_invoke(http, url, body, headers) for _ in range(n)))
    failed = [r for r in results if r is not None]
    if failed:
        raise RuntimeError(f"memory: {len(failed)} of {n} calls failed, e.g. {failed[0]}")


async def _gauge(http: aiohttp.ClientSession, bridge: Bridge) -> int:
    async with http.get(bridge.url + "/metrics") as resp:
        text = await resp.text()
    match = _IN_FLIGHT.search(text)
    return round(float(match.group(1))) if match else 0


async def _burst(
    probe: aiohttp.ClientSession,
    bridge: Bridge,
    downstream: SlowDownstream,
    bench: Bench,
    calls: int,
) -> Burst:
    """`calls` concurrent invocations from a fresh client, closed once all have answered (so
    its idle keep-alive connections are not counted after); RSS and calls in flight are
    sampled meanwhile."""
    out = Burst()
    done = asyncio.Event()
    downstream.peak = 0

    async def sample_rss() -> None:
        while not done.is_set():
            out.peak_rss = max(out.peak_rss, bridge.rss())
            await asyncio.sleep(SAMPLE_S)

    async def sample_in_flight() -> None:
        asked_ops = False
        while not done.is_set():
            seen = await _gauge(probe, bridge)
            out.in_flight_gauge = max(out.in_flight_gauge, seen)
            if not asked_ops and seen >= calls:
                # Once, when every call is in: the supervisor's view of the same calls.
                asked_ops = True
                async with probe.get(
                    bridge.url + "/v1/ops/inflight", headers=bridge.headers(bridge.supervisor_key)
                ) as resp:
                    out.in_flight_ops = int((await resp.json())["count"])
            await asyncio.sleep(0.1)

    samplers = [asyncio.create_task(sample_rss()), asyncio.create_task(sample_in_flight())]
    try:
        async with _client(bridge.timeout_s) as http:
            await _calls(http, bridge, bench, calls)
    finally:
        done.set()
        await asyncio.gather(*samplers)
    out.peak_rss = max(out.peak_rss, bridge.rss())
    out.downstream_peak = downstream.peak
    return out


async def _real_ticket(bench: Bench) -> dict[str, Any]:
    url = f"{bench.product.urls['api']}/v1/tickets/{bench.ticket}"
    async with bench.http.get(url, headers=bench.api_headers) as resp:
        resp.raise_for_status()
        ticket: dict[str, Any] = await resp.json()
    return ticket


@dataclass
class Measured:
    baseline: int = 0
    high_water: int = 0
    peaks: list[float] = field(default_factory=list)
    soon: list[float] = field(default_factory=list)
    idle: list[float] = field(default_factory=list)
    gauges: list[int] = field(default_factory=list)
    ops: list[int] = field(default_factory=list)
    downs: list[int] = field(default_factory=list)


async def _measure(
    bench: Bench, downstream: SlowDownstream, calls: int, reps: int, idle_s: float, **env: str
) -> Measured:
    """A bridge of its own (with `env` on top of the image's): warm-up, baseline, bursts."""
    # Loose enough that no call times out though the bridge queues them in waves behind its
    # connection pool (100 connections would make 2,000 calls 20 waves of `delay_s`).
    timeout_s = math.ceil(downstream.delay_s * max(calls / 100, 1) + 60)
    bridge = Bridge(downstream.url, timeout_s, max_in_flight=calls, extra_env=env)
    probe = aiohttp.ClientSession()
    out = Measured()
    try:
        await bridge.start()
        async with _client(timeout_s) as http:  # warm-up
            await _calls(http, bridge, bench, min(100, calls))
        await asyncio.sleep(SETTLE_S)
        out.baseline = bridge.rss()
        for _ in range(reps):
            burst = await _burst(probe, bridge, downstream, bench, calls)
            await asyncio.sleep(SETTLE_S)
            out.soon.append(bridge.rss() / out.baseline)
            await asyncio.sleep(idle_s - SETTLE_S)
            out.idle.append(bridge.rss() / out.baseline)
            out.peaks.append(burst.peak_rss / MB)
            out.gauges.append(burst.in_flight_gauge)
            out.ops.append(burst.in_flight_ops)
            out.downs.append(burst.downstream_peak)
        out.high_water = bridge.high_water()
    finally:
        await probe.close()
        await bridge.stop()
    return out


async def run(bench: Bench) -> list[Figure]:
    sizes = bench.sizes
    calls = int(os.environ.get("BENCH_MEMORY_CALLS", QUICK_CALLS if sizes.quick else CALLS))
    slow_s = float(os.environ.get("BENCH_MEMORY_SLOW_S", QUICK_SLOW_S if sizes.quick else SLOW_S))
    idle_s = SETTLE_S if sizes.quick else IDLE_S
    downstream = SlowDownstream(await _real_ticket(bench), slow_s)
    try:
        await downstream.start()
        m = await _measure(bench, downstream, calls, max(sizes.reps, 1), idle_s)
        # The same with pymalloc (Python's default; its arenas stay pinned): what the image's
        # PYTHONMALLOC=malloc buys. One repetition: it is a comparison, not a target.
        pymalloc = await _measure(bench, downstream, calls, 1, SETTLE_S, PYTHONMALLOC="pymalloc")
    finally:
        await downstream.stop()
    baseline, high_water = m.baseline, m.high_water
    peaks, soon, idle, gauges, ops, downs = m.peaks, m.soon, m.idle, m.gauges, m.ops, m.downs
    n = f"{calls:,}"
    queued = max(gauges) > max(downs)
    figures = [
        figure(
            "Memory",
            f"bridge peak RSS with {n} calls in flight (MB)",
            peaks,
            "<= 150",
            f"downstream answers after {slow_s:g} s; VmHWM {high_water / MB:.1f} MB",
        ),
        figure(
            "Memory",
            "bridge RSS after / baseline",
            soon,
            "<= 1.3",
            f"{SETTLE_S:g} s after the last answer; baseline once, after warm-up",
        ),
    ]
    if idle_s > SETTLE_S:
        figures.append(
            figure(
                "Memory",
                f"bridge RSS {idle_s:g} s after / baseline",
                idle,
                "",
                "idle pooled connections to dispatch-api expired (aiohttp keep-alive 15 s)",
            )
        )
    if len(soon) > 1:
        figures.append(
            figure(
                "Memory",
                "bridge RSS after the last burst / after the first",
                [soon[-1] / soon[0]],
                "",
                "growth across bursts: a leak would show here",
            )
        )
    return [
        *figures,
        figure("Memory", "bridge baseline RSS after warm-up (MB)", [baseline / MB], ""),
        figure(
            "Memory",
            "with pymalloc (not the image's): bridge RSS after / baseline",
            pymalloc.soon,
            "",
            f"peak {pymalloc.peaks[0]:.1f} MB, baseline {pymalloc.baseline / MB:.1f} MB; the"
            " arenas the burst grew stay pinned, so the idle trim cannot give them back",
        ),
        figure("Memory", "max calls in flight seen (tool_calls_in_flight)", gauges, "", f"of {n}"),
        figure("Memory", "calls in flight seen by GET /v1/ops/inflight", ops, "", "0: not seen"),
        figure(
            "Memory",
            "max concurrent requests reaching the downstream",
            downs,
            "",
            "fewer: the rest queued in the bridge"
            if queued
            else "each call in flight had its own connection to dispatch-api",
        ),
    ]
