"""The bridge's Prometheus metrics (names as DESIGN section 6, the rest in its spirit)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dispatch_client import BreakerState, DispatchClient
from telemetry import LATENCY_BUCKETS_MS

#: The tool label of calls naming no known tool: arbitrary names never become labels.
UNKNOWN_TOOL = "_unknown"


def dry_run_outcome(result: dict[str, Any] | None, error_code: str | None) -> str:
    """The `outcome` label: accepted or rejected (what dispatch-api says the call would do),
    ok (a read-only tool's answer), or the tool error code of a refused dry run."""
    if error_code is not None:
        return error_code
    accepted = (result or {}).get("accepted")
    if accepted is None:
        return "ok"
    return "accepted" if accepted else "rejected"


class BridgeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.invocations = Counter(
            "tool_invocations",
            "Tool calls by tool and outcome code (ok or a tool error code)",
            ["tool", "code"],
            registry=registry,
        )
        self.dry_runs = Counter(
            "tool_dry_runs",
            "Dry runs by tool and outcome (accepted, rejected, ok for a read-only tool, or a"
            " tool error code); never counted in tool_invocations",
            ["tool", "outcome"],
            registry=registry,
        )
        self.latency_ms = Histogram(
            "tool_latency_ms",
            "Tool call latency in milliseconds, retries included",
            ["tool"],
            buckets=LATENCY_BUCKETS_MS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "tool_calls_in_flight", "Tool calls running now", ["tool"], registry=registry
        )
        self.in_flight_limit = Gauge(
            "tool_calls_in_flight_limit",
            "How many tool calls may run at once now (the adaptive limit, between"
            " DISPATCH_MIN_IN_FLIGHT and DISPATCH_MAX_IN_FLIGHT); beyond it new calls are"
            " refused",
            registry=registry,
        )
        self.loop_lag = Gauge(
            "event_loop_lag_seconds",
            "How late the event loop runs its timers now; above DISPATCH_MAX_LOOP_LAG_MS new"
            " tool calls are refused",
            registry=registry,
        )
        self.retries = Counter(
            "tool_retries",
            "HTTP retries to dispatch-api, by tool and the failure that caused them",
            ["tool", "reason"],
            registry=registry,
        )

        # `.labels()` hashes and validates its values on every call (a few µs, four times a
        # call): the children are kept here instead. Both label sets are bounded (catalog
        # tools and UNKNOWN_TOOL; tool error codes), so are these caches.
        self._invoked: dict[tuple[str, str], Any] = {}
        self._running: dict[str, Any] = {}
        self._latency: dict[str, Any] = {}

    def invoked(self, tool: str, code: str) -> Any:
        """The tool_invocations_total child of (tool, code)."""
        child = self._invoked.get((tool, code))
        if child is None:
            child = self._invoked[(tool, code)] = self.invocations.labels(tool, code)
        return child

    def running(self, tool: str) -> Any:
        """The tool_calls_in_flight child of `tool` (a catalog tool: only those run)."""
        child = self._running.get(tool)
        if child is None:
            child = self._running[tool] = self.in_flight.labels(tool)
        return child

    def latency_of(self, tool: str) -> Any:
        """The tool_latency_ms child of `tool`."""
        child = self._latency.get(tool)
        if child is None:
            child = self._latency[tool] = self.latency_ms.labels(tool)
        return child

    def watch(self, client: DispatchClient) -> None:
        """Expose the client's retry budget and breaker (state lives in the client)."""
        self.registry.register(_ClientCollector(client))


class _ClientCollector(Collector):
    def __init__(self, client: DispatchClient) -> None:
        self._client = client

    def collect(self) -> Iterator[Metric]:
        exhausted = CounterMetricFamily(
            "retry_budget_exhausted",
            "Retries refused because the retry budget was spent",
            labels=["downstream"],
        )
        exhausted.add_metric(["dispatch-api"], self._client.budget.exhausted_total)
        yield exhausted
        state = GaugeMetricFamily(
            "circuit_breaker_state",
            "1 for the breaker's current state (closed, open, half_open)",
            labels=["downstream", "state"],
        )
        current = self._client.breaker.state
        for candidate in BreakerState:
            state.add_metric(["dispatch-api", str(candidate)], 1.0 if candidate is current else 0.0)
        yield state
