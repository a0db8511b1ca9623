"""`make bench`: every side-by-side scenario in one run; writes bench/results/latest.md/.json.

Starts dispatch-api and the bridge as two processes on an embedded PostgreSQL (as in
production), then runs the scenario modules in order. Each returns figures: a list of
per-repetition values, reported as median (min .. max) against the target issue 8 names.
The scale figures (bench/scale.py, a million tickets) are folded in from scale.json, and
a py-spy profile of the bridge under load is added as a section.

    python -m bench.harness [--requests 300] [--reps 5] [--concurrency 8] [--seconds 3]
                            [--only hop,database,...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench import (
    allocator,
    database,
    hop,
    memory,
    noisy_neighbour,
    observability,
    overload,
    peer,
    profile,
)
from bench._context import Bench, Sizes
from bench._load import have_wrk
from bench._product import Product
from bench._report import Figure, figure, machine, markdown
from bench.cpu import cpu_seconds

RESULTS = Path(__file__).parent / "results"
Scenario = Callable[[Bench], Awaitable[list[Figure]]]
SCENARIOS: dict[str, Scenario] = {
    "hop": hop.run,
    "observability": observability.run,
    "overload": overload.run,
    "database": database.run,
    "peer": peer.run,
    "profile": profile.run,
    "memory": memory.run,
    "allocator": allocator.run,
    "noisy_neighbour": noisy_neighbour.run,
}


async def _database_facts(dsn: str) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        return {
            "postgresql": await conn.fetchval("SHOW server_version"),
            "synchronous_commit": await conn.fetchval("SHOW synchronous_commit"),
        }
    finally:
        await conn.close()


async def run(sizes: Sizes, only: list[str], out: Path) -> dict[str, Any]:
    figures: list[Figure] = []
    started = time.perf_counter()
    async with Product(observed_proxy=True) as product:
        facts = await _database_facts(product.dsn)
        processes = {name: product.process(name) for name in ("api", "bridge", "proxy", "postgres")}
        cpu_before = {n: cpu_seconds(p, tree=n == "postgres") for n, p in processes.items()}
        own_before = sum(os.times()[:2])
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            bench = Bench(product, http, sizes, out=out)
            await bench.prepare()
            for name in only:
                figures += await SCENARIOS[name](bench)
        cpu = {
            n: cpu_seconds(p, tree=n == "postgres") - cpu_before[n] for n, p in processes.items()
        }
        cpu["load generator (this process)"] = sum(os.times()[:2]) - own_before
    return {
        "machine": {**machine(), **facts},
        "method": {
            **_fields(sizes),
            "load_generators": "wrk (1 thread) for saturation" if have_wrk() else "aiohttp",
            "same_machine": True,
            "wall_seconds": round(time.perf_counter() - started, 1),
        },
        "cpu": {k: round(v, 2) for k, v in cpu.items()},
        "scenarios": figures + _scale_figures(out / "scale.json"),
        "sections": bench.sections,
    }


def _scale_figures(path: Path) -> list[Figure]:
    """The million-ticket figures of bench/scale.py (run first by `make bench`), one row
    per query: its p99 against the target."""
    if not path.exists():
        return []
    scale = json.loads(path.read_text())
    note = f"{scale['tickets']:,} tickets, {scale['timeline_events']:,} events"
    return [
        figure("Scale", f"{name} p99 (ms)", [s["p99_ms"]], f"<= {s['target_ms']}", note)
        for name, s in scale["scenarios"].items()
    ]


def _fields(sizes: Sizes) -> dict[str, Any]:
    return {f: getattr(sizes, f) for f in ("requests", "reps", "concurrency", "seconds")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    sizes = Sizes(args.requests, args.reps, args.concurrency, args.seconds)
    args.out.mkdir(parents=True, exist_ok=True)
    report = asyncio.run(run(sizes, args.only.split(","), args.out))
    (args.out / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "latest.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
