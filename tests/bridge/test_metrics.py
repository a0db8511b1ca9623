"""bridge /metrics: tool invocations by tool and code, latency, calls in flight, retries by
reason, the retry budget and the breaker; bounded labels; promtool-clean."""

from __future__ import annotations

import asyncio
import math
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dispatch_client import BreakerConfig, BudgetConfig, RetryConfig, RetryPolicy
from telemetry import LATENCY_BUCKETS_MS
from testkit.api import COMPLETE_TICKET, WINDOW, Reply
from tools import catalog

from .conftest import FAST_RETRIES, Bridge

PROMTOOL = "/usr/bin/promtool"
#: promtool's only complaint DESIGN section 6 imposes: the name must say milliseconds ("_ms").
DESIGN_MANDATED_LINT = {"tool_latency_ms metric names should not contain abbreviated units"}
BUCKETS_MS = [1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000]
TOOL_NAMES = {t.name for t in catalog()}
BREAKER_STATES = {"closed", "open", "half_open"}
TRIP_AFTER_TWO = RetryConfig(
    default=RetryPolicy(
        max_attempts=1,
        per_try_timeout_s=1.0,
        deadline_s=2.0,
        base_backoff_s=0.01,
        max_backoff_s=0.05,
    ),
    breaker=BreakerConfig(failure_threshold=2, open_s=60),
)
ONE_RETRY_TOKEN = RetryConfig(
    default=FAST_RETRIES.default,
    budget=BudgetConfig(ratio=0.0, min_retries_per_s=0.0, max_tokens=1.0),
)
NO_RATE_LIMIT = {"rate_limit_per_s": 1_000_000.0, "rate_limit_burst": 1_000_000}

Labels = tuple[tuple[str, str], ...]
Series = dict[tuple[str, Labels], float]


def parse(exposition: str) -> Series:
    """Every sample of an exposition: (sample name, sorted labels) -> value."""
    series: Series = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in series, f"duplicate sample {key}"
            series[key] = sample.value
    return series


def by_labels(series: Series, name: str, *keys: str) -> dict[tuple[str, ...], float]:
    """The samples called `name`, keyed by the values of labels `keys` (in that order)."""
    found: dict[tuple[str, ...], float] = {}
    for (sample, labels), value in series.items():
        if sample == name:
            as_dict = dict(labels)
            assert set(as_dict) == set(keys), f"{name} has labels {sorted(as_dict)}"
            found[tuple(as_dict[k] for k in keys)] = value
    return found


def one(series: Series, name: str, labels: Mapping[str, str] | None = None) -> float:
    key = (name, tuple(sorted((labels or {}).items())))
    assert key in series, f"no sample {key}"
    return series[key]


def breaker(series: Series) -> dict[str, float]:
    states = by_labels(series, "circuit_breaker_state", "downstream", "state")
    assert {downstream for downstream, _ in states} == {"dispatch-api"}
    return {state: value for (_, state), value in states.items()}


async def scrape(bridge: Bridge) -> tuple[Series, bytes]:
    reply = await bridge.request("GET", "/metrics", as_="")
    assert reply.status == 200, reply.raw[:500]
    assert reply.content_type == "text/plain"
    return parse(reply.raw.decode()), reply.raw


async def promtool_check(exposition: bytes) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        PROMTOOL,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await proc.communicate(exposition)
    assert proc.returncode is not None
    return proc.returncode, output.decode()


async def in_batches(calls: list[Callable[[], Awaitable[object]]], size: int = 100) -> None:
    """Run the zero-argument coroutine factories `size` at a time."""
    for start in range(0, len(calls), size):
        await asyncio.gather(*(call() for call in calls[start : start + size]))


async def test_metrics_count_tool_calls_by_tool_and_code_and_show_calls_in_flight(
    bridge: Bridge,
) -> None:
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    tid = created.body["result"]["ticket"]["id"]
    invalid = await bridge.invoke("ticket.schedule", {"ticket_id": tid})
    unknown = await bridge.invoke("no.such.tool", {})
    forbidden = await bridge.invoke("ticket.create", COMPLETE_TICKET, as_="technician")
    bridge.proxy.hold()
    held = asyncio.create_task(bridge.invoke("ticket.get", {"ticket_id": tid}))
    await asyncio.wait_for(bridge.proxy.holding.wait(), 5)
    during, _ = await scrape(bridge)
    bridge.proxy.release()
    got = await held
    after, _ = await scrape(bridge)

    assert created.status == got.status == 200
    assert [r.body["error"]["code"] for r in (invalid, unknown, forbidden)] == [
        "invalid_arguments",
        "unknown_tool",
        "forbidden",
    ]
    assert by_labels(after, "tool_invocations_total", "tool", "code") == {
        ("ticket.create", "ok"): 1.0,
        ("ticket.schedule", "invalid_arguments"): 1.0,
        ("_unknown", "unknown_tool"): 1.0,
        ("ticket.create", "forbidden"): 1.0,
        ("ticket.get", "ok"): 1.0,
    }
    in_flight = by_labels(during, "tool_calls_in_flight", "tool")
    assert {tool: n for (tool,), n in in_flight.items() if n} == {"ticket.get": 1.0}
    assert by_labels(after, "tool_calls_in_flight", "tool") == {
        ("ticket.create",): 0.0,
        ("ticket.schedule",): 0.0,
        ("ticket.get",): 0.0,
    }  # unknown names are never in flight, and never labels
    calls = {"ticket.create": 2, "ticket.schedule": 1, "_unknown": 1, "ticket.get": 1}
    for tool, n in calls.items():
        bounds = [
            float(dict(labels)["le"])
            for (name, labels), _ in after.items()
            if name == "tool_latency_ms_bucket" and dict(labels)["tool"] == tool
        ]
        assert bounds == [*LATENCY_BUCKETS_MS, math.inf] == [*BUCKETS_MS, math.inf], tool
        assert one(after, "tool_latency_ms_count", {"tool": tool}) == n
        assert one(after, "tool_latency_ms_bucket", {"tool": tool, "le": "+Inf"}) == n
    assert by_labels(after, "tool_retries_total", "tool", "reason") == {}
    assert by_labels(after, "retry_budget_exhausted_total", "downstream") == {
        ("dispatch-api",): 0.0
    }
    assert breaker(after) == {"closed": 1.0, "open": 0.0, "half_open": 0.0}
    assert "no.such.tool" not in {v for _, labels in after for _, v in labels}


async def test_a_retry_after_a_lost_response_is_counted_by_tool_and_reason(
    bridge: Bridge,
) -> None:
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    tid = created.body["result"]["ticket"]["id"]
    bridge.proxy.drop_responses = 1

    reply = await bridge.invoke("ticket.schedule", {"ticket_id": tid, **WINDOW})
    series, _ = await scrape(bridge)

    assert reply.status == 200, reply.body
    # The connection dies after the request went out; dispatch_client.retry_reason calls
    # every TransportFailure (refused, reset, disconnected) "connect".
    assert by_labels(series, "tool_retries_total", "tool", "reason") == {
        ("ticket.schedule", "connect"): 1.0
    }
    assert by_labels(series, "tool_invocations_total", "tool", "code") == {
        ("ticket.create", "ok"): 1.0,
        ("ticket.schedule", "ok"): 1.0,
    }
    assert one(series, "retry_budget_exhausted_total", {"downstream": "dispatch-api"}) == 0.0
    assert breaker(series) == {"closed": 1.0, "open": 0.0, "half_open": 0.0}


@pytest.mark.parametrize("bridge_retry", [ONE_RETRY_TOKEN])
async def test_a_retry_refused_by_the_spent_budget_is_counted_as_exhausted(
    bridge: Bridge,
) -> None:
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    tid = created.body["result"]["ticket"]["id"]
    bridge.proxy.drop_responses = 2  # the first retry spends the only token; the next is refused

    reply = await bridge.invoke("ticket.schedule", {"ticket_id": tid, **WINDOW})
    series, _ = await scrape(bridge)

    assert reply.status == 503, reply.body
    assert reply.body["error"]["code"] == "upstream_unavailable"
    assert bridge.proxy.requests == 3  # create, the first try, one retry
    assert by_labels(series, "retry_budget_exhausted_total", "downstream") == {
        ("dispatch-api",): 1.0
    }
    assert by_labels(series, "tool_retries_total", "tool", "reason") == {
        ("ticket.schedule", "connect"): 1.0
    }
    assert by_labels(series, "tool_invocations_total", "tool", "code") == {
        ("ticket.create", "ok"): 1.0,
        ("ticket.schedule", "upstream_unavailable"): 1.0,
    }
    assert breaker(series) == {"closed": 1.0, "open": 0.0, "half_open": 0.0}


@pytest.mark.parametrize("bridge_retry", [TRIP_AFTER_TWO])
async def test_the_breaker_shows_open_once_dispatch_api_is_unreachable(bridge: Bridge) -> None:
    before, _ = await scrape(bridge)
    await bridge.proxy.close()

    replies = [await bridge.invoke("queue.view", {}) for _ in range(3)]
    series, _ = await scrape(bridge)

    assert breaker(before) == {"closed": 1.0, "open": 0.0, "half_open": 0.0}
    assert [r.status for r in replies] == [503, 503, 503]
    assert {r.body["error"]["code"] for r in replies} == {"upstream_unavailable"}
    assert breaker(series) == {"closed": 0.0, "open": 1.0, "half_open": 0.0}
    assert sum(breaker(series).values()) == 1.0
    assert by_labels(series, "tool_invocations_total", "tool", "code") == {
        ("queue.view", "upstream_unavailable"): 3.0
    }
    assert by_labels(series, "tool_retries_total", "tool", "reason") == {}  # one try each


@pytest.mark.parametrize("bridge_overrides", [NO_RATE_LIMIT])
async def test_random_tool_names_and_paths_leave_the_series_count_flat(bridge: Bridge) -> None:
    tokens: list[str] = []

    def token() -> str:
        word = "zq" + secrets.token_hex(5)
        tokens.append(word)
        return word

    def random_call(i: int) -> Callable[[], Awaitable[Reply]]:
        kind = i % 5
        method, as_ = "POST", "dispatcher"
        path = f"/v1/tools/{token()}/invoke"
        body: dict[str, Any] | None = {"arguments": {}}
        if kind == 1:
            path = f"/v1/tools/ticket.{token()}/invoke"
        elif kind == 2:
            method, path, body = "GET", f"/random/{secrets.randbelow(10**9)}/{token()}", None
        elif kind == 3:
            path, body = "/v1/tools/ticket.get/invoke", {"arguments": {"ticket_id": token()}}
        elif kind == 4:
            method, body, as_ = "GET", None, ""

        async def call() -> Reply:
            reply = await bridge.request(method, path, json=body, as_=as_)
            assert 400 <= reply.status < 500, (method, path, reply.status, reply.body)
            return reply

        return call

    await in_batches([random_call(i) for i in range(50)])
    warm, _ = await scrape(bridge)
    await in_batches([random_call(i) for i in range(50, 2050)])
    after, _ = await scrape(bridge)

    assert set(after) == set(warm), sorted(set(after) ^ set(warm))
    assert len(after) == len(warm)
    invocations = by_labels(after, "tool_invocations_total", "tool", "code")
    assert {tool for tool, _ in invocations} == {"_unknown", "ticket.get"}
    assert invocations[("_unknown", "unknown_tool")] == 2 * 2050 / 5
    assert {tool for _, labels in after for k, tool in labels if k == "tool"} <= TOOL_NAMES | {
        "_unknown"
    }
    values = {v for _, labels in after for _, v in labels}
    assert not {v for v in values if any(t in v for t in tokens)}


async def test_promtool_accepts_the_bridge_exposition_after_traffic(bridge: Bridge) -> None:
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    tid = created.body["result"]["ticket"]["id"]
    bridge.proxy.drop_responses = 1
    await bridge.invoke("ticket.schedule", {"ticket_id": tid, **WINDOW})  # one retry
    await bridge.invoke("no.such.tool", {})
    await bridge.invoke("ticket.cancel", {"ticket_id": tid}, as_="technician")
    series, exposition = await scrape(bridge)

    code, output = await promtool_check(exposition)

    findings = {line.strip() for line in output.splitlines() if line.strip()}
    # Exit 1 is a parse error; exit 3 means lint findings only, and the only one allowed is
    # the `_ms` unit the DESIGN names require.
    assert findings <= DESIGN_MANDATED_LINT, output
    assert code == (3 if findings else 0), f"promtool exit {code}:\n{output}"
    names = {name for name, _ in series}
    assert {
        "tool_invocations_total",
        "tool_latency_ms_bucket",
        "tool_calls_in_flight",
        "tool_retries_total",
        "retry_budget_exhausted_total",
        "circuit_breaker_state",
    } <= names


async def test_calls_refused_before_the_pipeline_are_counted_too(bridge: Bridge) -> None:
    await bridge.invoke("ticket.get", {"ticket_id": str(uuid.uuid4())}, as_="")
    await bridge.request(
        "POST",
        "/v1/tools/ticket.create/invoke",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    )

    exposition = (await bridge.request("GET", "/metrics", as_="")).raw.decode()

    assert 'tool_invocations_total{code="unauthenticated",tool="ticket.get"} 1.0' in exposition
    assert 'tool_invocations_total{code="invalid_arguments",tool="ticket.create"} 1.0' in exposition
