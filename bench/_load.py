"""Load generators: sequential and closed-loop aiohttp callers, `wrk` for saturation, and an
open-loop (constant arrival rate) caller that records into an HDR histogram.

The open-loop caller measures each request from the moment it was *due*, not from when it
was sent, so a stalled server cannot hide its queue (coordinated omission).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from hdrh.histogram import HdrHistogram

Call = Callable[[], Awaitable[int]]
"""One request; returns the HTTP status."""


async def latencies(call: Call, n: int) -> list[float]:
    """`n` sequential calls (low load); milliseconds each."""
    out = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        out.append((time.perf_counter() - started) * 1000)
    return out


async def closed_loop(call: Call, n: int, concurrency: int) -> float:
    """`n` calls from `concurrency` workers, each sending its next as soon as one returns;
    calls per second."""
    remaining = n

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - started)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def median(values: list[float]) -> float:
    return statistics.median(values)


# --- wrk ---------------------------------------------------------------------------------


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


_WRK_SCRIPT = """
wrk.method = "{method}"
wrk.body = [[{body}]]
{headers}
"""


def wrk(
    url: str,
    *,
    method: str = "GET",
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    script: str | None = None,
    connections: int = 8,
    seconds: float = 3.0,
    socket_errors_fail: bool = False,
) -> float:
    """Saturation throughput (requests/s) from `wrk` with one thread; any non-2xx answer
    fails the run. One request repeated (`method`, `body`, `headers`), or a Lua `script` of
    one's own. `socket_errors_fail` also fails it on connect/read errors and timeouts."""
    if script is None:
        script = _WRK_SCRIPT.format(
            method=method,
            body=body.decode(),
            headers="\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in (headers or {}).items()),
        )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "-s",
                f.name,
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 60,
        ).stdout
    finally:
        Path(f.name).unlink()
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None:
        raise RuntimeError(f"wrk printed no throughput:\n{out}")
    if "Non-2xx" in out or (socket_errors_fail and "Socket errors" in out):
        raise RuntimeError(f"wrk saw failures:\n{out}")
    return float(found.group(1))


# --- open loop ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenLoopResult:
    offered_per_s: float
    completed_per_s: float
    goodput_per_s: float  # 2xx answers per second
    statuses: dict[int, int]
    p50_ms: float
    p99_ms: float
    shed_p50_ms: float | None  # latency of the non-2xx answers (how fast excess is refused)


async def open_loop(call: Call, rate_per_s: float, seconds: float) -> OpenLoopResult:
    """Send at a constant `rate_per_s` for `seconds`, whatever the answers do; latency of
    each request counted from its due time, into HDR histograms (1 µs .. 60 s, 3 digits)."""
    ok = HdrHistogram(1, 60_000_000, 3)
    shed = HdrHistogram(1, 60_000_000, 3)
    statuses: dict[int, int] = {}
    total = max(1, int(rate_per_s * seconds))
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    tasks = []

    async def one(due: float) -> None:
        try:
            status = await call()
        except Exception:  # a refused or reset connection is an answer too, under overload
            status = 0
        micros = max(1, int((loop.time() - due) * 1_000_000))
        statuses[status] = statuses.get(status, 0) + 1
        (ok if 200 <= status < 300 else shed).record_value(micros)

    for i in range(total):
        due = start + i / rate_per_s
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    elapsed = loop.time() - start
    good = sum(n for s, n in statuses.items() if 200 <= s < 300)
    return OpenLoopResult(
        offered_per_s=rate_per_s,
        completed_per_s=total / elapsed,
        goodput_per_s=good / elapsed,
        statuses=statuses,
        p50_ms=ok.get_value_at_percentile(50) / 1000,
        p99_ms=ok.get_value_at_percentile(99) / 1000,
        shed_p50_ms=shed.get_value_at_percentile(50) / 1000 if shed.get_total_count() else None,
    )
