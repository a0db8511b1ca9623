"""`make soak` (not CI): ten minutes at half the measured capacity, with 1 % injected faults.

The product runs as in production: dispatch-api and the bridge as two processes
(`bench/_product.py`) on an embedded PostgreSQL. Two FaultProxies run in this process, on
the real network paths: bridge -> dispatch-api (random faults on 1 % of requests: answers
lost after the commit, requests lost before arrival, answers slower than the bridge's
per-try timeout but within its deadline) and dispatch-api -> PostgreSQL (every connection
cut at once, once a minute). In this process because the faults must sit between the two
services, and their counters (faults injected, tries that reached dispatch-api) are read
directly; the bridge stays a process of its own so that its RSS and descriptors are its
alone.

1. capacity: simulated agents (testkit/agents.py) in a closed loop, no faults;
2. warm-up: a minute (a tenth of the run at most) at `--share` of that rate, with faults;
3. soak: `--minutes` at that rate, with faults; RSS and open descriptors of both services
   sampled every few seconds. The agents are paced: each starts its calls on a fixed
   schedule (a slow answer delays only that agent, which never bursts to catch up);
4. the history check (testkit/history.py) of every call of every phase, from the
   database: zero lost or doubled effects, every call within its deadline.

Targets: RSS growth < 5 % (the median of the last three samples against the median of the
first three), descriptors flat (the most open in the last third of the run against the
most in the first third), zero lost or doubled effects, no violation of the history check.
Writes `soak.md` and `soak.json` to `--out`; exits 1 when a target is missed.

    python -m bench.soak [--minutes 10] [--share 0.5] [--fault-rate 0.01] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from bench._load import percentile
from bench._product import Product
from bench._report import machine
from dispatch_api.store import start_embedded
from dispatch_client import RetryConfig, parse_retry_config
from testkit.agents import Endpoint, run_agents
from testkit.fault_proxy import FaultProxy
from testkit.history import Call, check
from testkit.pg_proxy import server_proxy, through
from testkit.processes import free_port
from tools import catalog

RESULTS = Path(__file__).parent / "results"
AGENTS = 32
SEED = 20261127
RSS_GROWTH_MAX_PCT = 5.0
#: "Flat": the most descriptors open in the last third of the run at most this many above
#: the most in the first third. Ceilings, not single samples: the count swings with the
#: connections open at the instant (pools, keep-alive, faults); a leak raises the ceiling.
FDS_TOLERANCE = 4
PG_CUT_EVERY_S = 60.0
MB = 1024 * 1024


@dataclass
class Sampler:
    """RSS and open descriptors of the named processes, every `every_s` seconds."""

    processes: dict[str, psutil.Process]
    every_s: float
    started: float = field(default_factory=time.monotonic)
    samples: list[dict[str, float]] = field(default_factory=list)

    def sample(self) -> None:
        row: dict[str, float] = {"t": round(time.monotonic() - self.started, 1)}
        for name, proc in self.processes.items():
            row[f"{name}_rss_mb"] = round(proc.memory_info().rss / MB, 2)
            row[f"{name}_fds"] = proc.num_fds()
        self.samples.append(row)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every_s)
        self.sample()

    def summary(self, name: str) -> dict[str, float]:
        rss = [s[f"{name}_rss_mb"] for s in self.samples]
        fds = [s[f"{name}_fds"] for s in self.samples]
        start, end = statistics.median(rss[:3]), statistics.median(rss[-3:])
        half = len(rss) // 2
        middle = statistics.median(rss[max(half - 1, 0) : half + 2])
        return {
            "rss_start_mb": start,
            "rss_end_mb": end,
            "rss_max_mb": max(rss),
            "rss_growth_pct": round((end - start) / start * 100, 2),
            # Not a target: a leak keeps growing in the second half, a warm-up does not.
            "rss_growth_second_half_pct": round((end - middle) / middle * 100, 2),
            "fds_start": statistics.median(fds[:3]),
            "fds_end": statistics.median(fds[-3:]),
            "fds_max": max(fds),
            "fds_max_first_third": max(fds[: max(len(fds) // 3, 1)]),
            "fds_max_last_third": max(fds[-max(len(fds) // 3, 1) :]),
        }


async def _retry_config(http: aiohttp.ClientSession, url: str, key: str) -> RetryConfig:
    """The running bridge's retry configuration, as `GET /v1/config` shows it."""
    async with http.get(url + "/v1/config", headers={"Authorization": f"Bearer {key}"}) as r:
        r.raise_for_status()
        shown = (await r.json())["retry"]
    raw = {**shown["default"], "tools": shown["tools"]}
    raw.update(budget=shown["budget"], breaker=shown["breaker"])
    return parse_retry_config(raw, frozenset(t.name for t in catalog()))


async def _cut_every(proxy: FaultProxy, every_s: float, stop: asyncio.Event) -> int:
    cuts = 0
    while True:
        try:
            await asyncio.wait_for(stop.wait(), every_s)
            return cuts
        except TimeoutError:
            proxy.cut()
            cuts += 1


def _rate(calls: list[Call]) -> float:
    if not calls:
        return 0.0
    return len(calls) / (max(c.end for c in calls) - min(c.start for c in calls))


async def soak(minutes: float, share: float, fault_rate: float) -> dict[str, Any]:
    seconds = minutes * 60
    quick = seconds < 60
    capacity_s = 5.0 if quick else 30.0
    warmup_s = min(60.0, seconds / 10)
    sample_s = 1.0 if quick else 5.0
    cut_every_s = min(PG_CUT_EVERY_S, (warmup_s + seconds) / 2)
    started = time.monotonic()
    api_port = free_port()
    api_link = FaultProxy("127.0.0.1", api_port)
    product = Product({"DISPATCH_API_PORT": str(api_port)})
    # The agents cancel each ticket they finish; nobody approves in a soak: approvals off.
    config = product.folder / "soak.toml"
    config.write_text("[approvals]\nrules = []\n")
    product.extra_env["DISPATCH_CONFIG"] = str(config)
    # Started here first (Product joins the same server) so dispatch-api can be given a
    # database URL through the proxy before it starts.
    direct_dsn = start_embedded(product.folder / "pg", delete_on_exit=True)
    pg_link = server_proxy(direct_dsn)
    calls: list[Call] = []
    async with contextlib.AsyncExitStack() as stack:
        for link in (api_link, pg_link):
            await link.start()
            stack.push_async_callback(link.close)
        product.extra_env["DISPATCH_API_URL"] = api_link.url
        product.extra_env["DISPATCH_DATABASE_URL"] = through(pg_link, direct_dsn)
        await stack.enter_async_context(product)
        http = await stack.enter_async_context(aiohttp.ClientSession())
        bridge_url = product.urls["bridge"]
        key = product.secrets["agent_key"]
        retry = await _retry_config(http, bridge_url, key)
        policy = retry.default
        endpoint = Endpoint(bridge_url, key, "bench-agent")
        timeout_s = policy.deadline_s + 5
        tries_before = api_link.requests

        agents = functools.partial(
            run_agents,
            http,
            endpoint,
            agents=AGENTS,
            timeout_s=timeout_s,
            technician_id="tech-dev-1",  # seeded by `up`
        )  # the same agents in every phase; each phase its own seed
        capacity_calls = await agents(seconds=capacity_s, seed=SEED)
        capacity = _rate(capacity_calls)
        rate = capacity * share
        calls += capacity_calls

        api_link.random_delay_s = policy.per_try_timeout_s + 0.5
        api_link.random_faults(fault_rate, random.Random(SEED))
        stop = asyncio.Event()
        cutter = asyncio.create_task(_cut_every(pg_link, cut_every_s, stop))
        calls += await agents(seconds=warmup_s, seed=SEED + 1, rate_per_s=rate)

        sampler = Sampler(
            {"bridge": product.process("bridge"), "api": product.process("api")}, sample_s
        )
        sampling = asyncio.create_task(sampler.run(stop))
        soak_tries_before = api_link.requests + api_link.faults["reset"]
        soak_calls = await agents(seconds=seconds, seed=SEED + 2, rate_per_s=rate)
        stop.set()
        await sampling
        cuts = await cutter
        api_link.random_faults(0.0)
        calls += soak_calls
        soak_tries = api_link.requests + api_link.faults["reset"] - soak_tries_before
        report = await check(
            calls,
            direct_dsn,
            retry=retry,
            downstream_tries=api_link.requests + api_link.faults["reset"] - tries_before,
        )
    history = report.as_dict()
    latencies = [c.seconds * 1000 for c in soak_calls]
    processes = {name: sampler.summary(name) for name in ("bridge", "api")}
    targets = {
        "effects lost": (report.lost, "== 0", report.lost == 0),
        "effects doubled": (report.doubled, "== 0", report.doubled == 0),
        "history violations": (len(report.violations), "== 0", not report.violations),
        **{
            f"{name} RSS growth %": (
                p["rss_growth_pct"],
                f"< {RSS_GROWTH_MAX_PCT:g}",
                p["rss_growth_pct"] < RSS_GROWTH_MAX_PCT,
            )
            for name, p in processes.items()
        },
        **{
            f"{name} open fds, max in the last third - in the first": (
                p["fds_max_last_third"] - p["fds_max_first_third"],
                f"<= {FDS_TOLERANCE}",
                p["fds_max_last_third"] - p["fds_max_first_third"] <= FDS_TOLERANCE,
            )
            for name, p in processes.items()
        },
    }
    return {
        "machine": machine(),
        "method": {
            "minutes": minutes,
            "agents": AGENTS,
            "capacity_seconds": capacity_s,
            "warmup_seconds": warmup_s,
            "sample_every_s": sample_s,
            "share_of_capacity": share,
            "fault_rate": fault_rate,
            "slow_answer_s": api_link.random_delay_s,
            "pg_cut_every_s": round(cut_every_s, 1),
            "retry": retry.describe()["default"],
            "allocator_env": product.allocator,
            "wall_seconds": round(time.monotonic() - started, 1),
        },
        "capacity_calls_per_s": round(capacity, 1),
        "offered_calls_per_s": round(rate, 1),
        "achieved_calls_per_s": round(_rate(soak_calls), 1),
        "soak": {
            "calls": len(soak_calls),
            "ok": sum(c.ok for c in soak_calls),
            "downstream_tries": soak_tries,
            "retry_amplification": round(soak_tries / max(len(soak_calls), 1), 4),
            "p50_ms": round(percentile(latencies, 0.5), 1) if latencies else None,
            "p99_ms": round(percentile(latencies, 0.99), 1) if latencies else None,
        },
        "faults": {**dict(api_link.faults), "pg_cuts": cuts},
        "history": history,
        "processes": processes,
        "targets": {k: {"value": v, "target": t, "met": m} for k, (v, t, m) in targets.items()},
        "samples": sampler.samples,
    }


def markdown(report: dict[str, Any]) -> str:
    m, s, h = report["method"], report["soak"], report["history"]
    lines = [
        "# Soak (`make soak`)",
        "",
        f"Machine: {report['machine']['cores']} cores, Python {report['machine']['python']},"
        f" {report['machine']['platform']}.",
        "",
        f"Method: dispatch-api and the bridge as processes on embedded PostgreSQL;"
        f" {m['agents']} simulated agents (REST and MCP, each working its own tickets"
        f" through create, schedule, hold, resume, dispatch, arrive, follow-up, cancel)."
        f" Capacity measured closed-loop for {m['capacity_seconds']:g} s, then"
        f" {m['warmup_seconds']:g} s of warm-up and {m['minutes']:g} min at"
        f" {m['share_of_capacity']:.0%} of it with {m['fault_rate']:.0%} of bridge ->"
        f" dispatch-api requests faulted (answer lost after commit, request lost, answer"
        f" held {m['slow_answer_s']:g} s > the per-try timeout) and every dispatch-api ->"
        f" PostgreSQL connection cut every {m['pg_cut_every_s']:g} s. Samples every"
        f" {m['sample_every_s']:g} s; RSS start and end are medians of the first and last"
        f" three samples; descriptors are compared by their highest count in the first and"
        f" the last third of the run. Both services run with the image's allocator settings"
        f" ({', '.join(f'{k}={v}' for k, v in m['allocator_env'].items())}; see the"
        f" Dockerfile). Wall time {m['wall_seconds']:g} s.",
        "",
        "| target | value | target | met |",
        "|---|---|---|---|",
    ]
    for name, t in report["targets"].items():
        lines.append(f"| {name} | {t['value']} | {t['target']} | {'yes' if t['met'] else 'NO'} |")
    lines += [
        "",
        "| figure | value |",
        "|---|---|",
        f"| capacity (closed loop, calls/s) | {report['capacity_calls_per_s']} |",
        f"| offered / achieved during the soak (calls/s) | {report['offered_calls_per_s']} /"
        f" {report['achieved_calls_per_s']} |",
        f"| soak calls / ok | {s['calls']} / {s['ok']} |",
        f"| soak latency p50 / p99 (ms, retries included) | {s['p50_ms']} / {s['p99_ms']} |",
        f"| retry amplification (downstream tries / tool calls) | {s['retry_amplification']} |",
        f"| faults injected | {report['faults']} |",
        f"| operations checked (all phases) | {h['operations']} |",
        f"| acknowledged / indeterminate (of which applied) | {h['acknowledged']} /"
        f" {h['indeterminate']} ({h['indeterminate_applied']}) |",
        f"| re-delivered by the agent | {h['redelivered']} |",
        f"| effects / tickets in the database | {h['effects']} / {h['tickets']} |",
        f"| lost / doubled / late | {h['lost']} / {h['doubled']} / {h['late']} |",
        f"| slowest call (s) | {h['max_call_s']} |",
        "",
        "| process | RSS start MB | RSS end MB | RSS max MB | growth % | growth % in the"
        " second half | fds start | fds end | fds max first third | fds max last third |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, p in report["processes"].items():
        lines.append(
            f"| {name} | {p['rss_start_mb']} | {p['rss_end_mb']} | {p['rss_max_mb']} |"
            f" {p['rss_growth_pct']} | {p['rss_growth_second_half_pct']} | {p['fds_start']} |"
            f" {p['fds_end']} | {p['fds_max_first_third']} | {p['fds_max_last_third']} |"
        )
    if h["violations"]:
        lines += ["", "## Violations", "", *(f"- {v}" for v in h["violations"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--share", type=float, default=0.5, help="of the measured capacity")
    parser.add_argument("--fault-rate", type=float, default=0.01)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    report = asyncio.run(soak(args.minutes, args.share, args.fault_rate))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "soak.md").write_text(markdown(report))
    print(markdown(report))
    sys.exit(0 if all(t["met"] for t in report["targets"].values()) else 1)


if __name__ == "__main__":
    main()
