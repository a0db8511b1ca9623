"""How the agent tools are doing: one answer from either of two sources.

Fleet-wide, from Prometheus' HTTP API (`/api/v1/query`), when a Prometheus URL is known: every
bridge replica it scrapes is summed. Otherwise one bridge's own `/metrics` text — behind a
load balancer, that is whichever replica answered, and the answer says so (`source_line`).
Both read the counters since each replica started, so the two sources agree on one replica.
The console's tool page and `dispatch-bridge tools` share this module.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

#: Codes that are not failures: a call held for a person's approval worked as configured.
NOT_FAILURES = frozenset({"ok", "approval_pending"})

#: The longest one source may take to answer, per request.
DEFAULT_TIMEOUT_S = 5.0

#: The PromQL each figure comes from (metric names as bridge/_metrics.py registers them).
QUERIES: Mapping[str, str] = {
    "calls": "sum by (tool, code) (tool_invocations_total)",
    "p50": "histogram_quantile(0.5, sum by (tool, le) (tool_latency_ms_bucket))",
    "p99": "histogram_quantile(0.99, sum by (tool, le) (tool_latency_ms_bucket))",
    "retries": "sum by (tool) (tool_retries_total)",
    "in_flight": "sum by (tool) (tool_calls_in_flight)",
    "breaker": "sum by (state) (circuit_breaker_state)",
}


class ToolHealthError(Exception):
    """The source could not be read: unreachable, too slow, or an answer that is not metrics.
    The message is one line naming the source, for an operator."""


@dataclass(frozen=True, slots=True)
class ToolStats:
    tool: str
    calls: int
    failure_ratio: float
    failures_by_code: Mapping[str, int]
    p50_ms: float | None
    p99_ms: float | None
    retries: int
    in_flight: int


@dataclass(frozen=True, slots=True)
class ToolHealth:
    #: "prometheus" (fleet-wide) or "bridge" (one replica's /metrics).
    source: str
    #: The URL read: Prometheus' base URL, or the bridge's /metrics.
    url: str
    tools: tuple[ToolStats, ...]
    #: Breaker state -> how many replicas report it (one replica: a single 1).
    breaker: Mapping[str, int] = field(default_factory=dict)

    @property
    def source_line(self) -> str:
        if self.source == "prometheus":
            return f"fleet-wide from Prometheus at {self.url}"
        return f"one replica: {self.url}"

    @property
    def breaker_line(self) -> str:
        """e.g. "closed" on one replica, "closed on 2 replicas, open on 1" fleet-wide."""
        states = {s: n for s, n in sorted(self.breaker.items()) if n}
        if not states:
            return "unknown"
        if self.source == "bridge":
            return next(iter(states))
        return ", ".join(f"{s} on {n} replica{'s' if n != 1 else ''}" for s, n in states.items())

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "source_url": self.url,
            "source_line": self.source_line,
            "breaker": dict(self.breaker),
            "tools": [
                {
                    "tool": t.tool,
                    "calls": t.calls,
                    "failure_ratio": t.failure_ratio,
                    "failures_by_code": dict(t.failures_by_code),
                    "p50_ms": t.p50_ms,
                    "p99_ms": t.p99_ms,
                    "retries": t.retries,
                    "in_flight": t.in_flight,
                }
                for t in self.tools
            ],
        }


async def tool_health(
    session: aiohttp.ClientSession,
    prometheus_url: str | None,
    bridge_url: str | None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> ToolHealth:
    """Fleet-wide figures from Prometheus when `prometheus_url` is set, else one bridge's
    /metrics; ToolHealthError when neither is set or the source cannot be read in time."""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    if prometheus_url:
        return await _from_prometheus(session, prometheus_url.rstrip("/"), timeout)
    if bridge_url:
        return await _from_bridge(session, bridge_url.rstrip("/") + "/metrics", timeout)
    raise ToolHealthError("no source: set DISPATCH_PROMETHEUS_URL or DISPATCH_BRIDGE_URL")


class _Figures:
    """Per-tool sums, whichever source they came from."""

    def __init__(self) -> None:
        self.calls: dict[str, dict[str, float]] = {}
        self.p50: dict[str, float | None] = {}
        self.p99: dict[str, float | None] = {}
        self.retries: dict[str, float] = {}
        self.in_flight: dict[str, float] = {}
        self.breaker: dict[str, float] = {}

    def health(self, source: str, url: str) -> ToolHealth:
        stats = []
        for tool in sorted(self.calls.keys() | self.in_flight.keys()):
            by_code = self.calls.get(tool, {})
            total = sum(by_code.values())
            failures = {c: n for c, n in by_code.items() if c not in NOT_FAILURES and n}
            stats.append(
                ToolStats(
                    tool=tool,
                    calls=int(total),
                    failure_ratio=round(sum(failures.values()) / total, 4) if total else 0.0,
                    failures_by_code={c: int(n) for c, n in sorted(failures.items())},
                    p50_ms=self.p50.get(tool),
                    p99_ms=self.p99.get(tool),
                    retries=int(self.retries.get(tool, 0)),
                    in_flight=int(self.in_flight.get(tool, 0)),
                )
            )
        breaker = {state: int(n) for state, n in sorted(self.breaker.items())}
        return ToolHealth(source, url, tuple(stats), breaker)


async def _from_prometheus(
    session: aiohttp.ClientSession, url: str, limit: aiohttp.ClientTimeout
) -> ToolHealth:
    names = list(QUERIES)
    answers = await asyncio.gather(*(_query(session, url, QUERIES[name], limit) for name in names))
    results = dict(zip(names, answers, strict=True))
    figures = _Figures()
    for labels, value in results["calls"]:
        figures.calls.setdefault(labels.get("tool", ""), {})[labels.get("code", "")] = value
    for name in ("p50", "p99"):
        quantiles: dict[str, float | None] = getattr(figures, name)
        for labels, value in results[name]:
            quantiles[labels.get("tool", "")] = None if math.isnan(value) else value
    for name in ("retries", "in_flight"):
        sums: dict[str, float] = getattr(figures, name)
        for labels, value in results[name]:
            sums[labels.get("tool", "")] = value
    for labels, value in results["breaker"]:
        figures.breaker[labels.get("state", "")] = value
    # Tools are the ones with calls; an in-flight gauge at zero names nothing new.
    figures.in_flight = {t: n for t, n in figures.in_flight.items() if n or t in figures.calls}
    return figures.health("prometheus", url)


async def _query(
    session: aiohttp.ClientSession, url: str, promql: str, limit: aiohttp.ClientTimeout
) -> list[tuple[dict[str, str], float]]:
    """One instant query: (labels, value) per series of the vector it answers."""
    try:
        async with session.get(
            f"{url}/api/v1/query", params={"query": promql}, timeout=limit
        ) as resp:
            if resp.status != 200:
                raise ToolHealthError(f"Prometheus at {url} answered {resp.status} to {promql}")
            body = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        reason = "no answer in time" if isinstance(exc, TimeoutError) else str(exc) or repr(exc)
        raise ToolHealthError(f"cannot read Prometheus at {url} ({reason})") from None
    try:
        if body["status"] != "success" or body["data"]["resultType"] != "vector":
            raise ValueError(body.get("error"))
        return [(r["metric"], float(r["value"][1])) for r in body["data"]["result"]]
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ToolHealthError(f"Prometheus at {url}: unexpected answer ({exc})") from None


async def _from_bridge(
    session: aiohttp.ClientSession, url: str, limit: aiohttp.ClientTimeout
) -> ToolHealth:
    try:
        async with session.get(url, timeout=limit) as resp:
            if resp.status != 200:
                raise ToolHealthError(f"the bridge at {url} answered {resp.status}")
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        reason = "no answer in time" if isinstance(exc, TimeoutError) else str(exc) or repr(exc)
        raise ToolHealthError(f"cannot read the bridge at {url} ({reason})") from None
    figures = _Figures()
    buckets: dict[str, list[tuple[float, float]]] = {}
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                tool = s.labels.get("tool", "")
                if s.name == "tool_invocations_total":
                    figures.calls.setdefault(tool, {})[s.labels["code"]] = s.value
                elif s.name == "tool_latency_ms_bucket":
                    buckets.setdefault(tool, []).append((float(s.labels["le"]), s.value))
                elif s.name == "tool_retries_total":
                    figures.retries[tool] = figures.retries.get(tool, 0.0) + s.value
                elif s.name == "tool_calls_in_flight":
                    figures.in_flight[tool] = s.value
                elif s.name == "circuit_breaker_state" and s.value:
                    figures.breaker[s.labels["state"]] = s.value
    except (ValueError, KeyError) as exc:
        raise ToolHealthError(f"the bridge at {url}: not Prometheus metrics ({exc})") from None
    for tool, found in buckets.items():
        ordered = sorted(found)
        figures.p50[tool] = quantile(ordered, 0.5)
        figures.p99[tool] = quantile(ordered, 0.99)
    figures.in_flight = {t: n for t, n in figures.in_flight.items() if n or t in figures.calls}
    return figures.health("bridge", url)


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """A quantile from cumulative histogram buckets, interpolated as Prometheus'
    histogram_quantile does (so both sources agree)."""
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return lower
            span = count - below
            return lower + (upper - lower) * ((rank - below) / span if span else 0)
        lower, below = upper, count
    return None
