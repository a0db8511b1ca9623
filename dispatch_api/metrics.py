"""dispatch-api's Prometheus metrics (names exactly as DESIGN section 6)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from telemetry import LATENCY_BUCKETS_MS

from .domain import Priority, State

#: From seconds to a week (the longest an approval may stay open).
APPROVAL_WAIT_BUCKETS_S = (
    5,
    15,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    7200,
    14400,
    86400,
    604800,
)


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "dispatch_api_requests",
            "HTTP requests by route template and status code",
            ["route", "code"],
            registry=registry,
        )
        self.latency_ms = Histogram(
            "dispatch_api_latency_ms",
            "HTTP request latency in milliseconds, by route template",
            ["route"],
            buckets=LATENCY_BUCKETS_MS,
            registry=registry,
        )
        self.errors = Counter(
            "dispatch_api_errors",
            "Answers of 400 and above, by problem code",
            ["type"],
            registry=registry,
        )
        self.tickets_created = Counter(
            "tickets_created", "Tickets created (replays excluded)", registry=registry
        )
        self.transitions = Counter(
            "state_transitions",
            "Accepted state changes, by from and to state",
            ["from", "to"],
            registry=registry,
        )
        self.in_state = Gauge(
            "tickets_in_state",
            "Tickets per state, read from the database at scrape time",
            ["state"],
            registry=registry,
        )
        self.oldest_in_state = Gauge(
            "tickets_oldest_in_state_seconds",
            "Age in its state of the ticket longest in each state (0 when none)",
            ["state"],
            registry=registry,
        )
        self.sla_now = Gauge(
            "tickets_sla",
            "Active tickets whose SLA is breached or at risk now",
            ["status"],
            registry=registry,
        )
        self.sla_breaches = Counter(
            "sla_breach", "SLA breaches recorded, by priority", ["priority"], registry=registry
        )
        self.replays = Counter(
            "idempotency_replay",
            "Requests answered from a stored response (Idempotent-Replayed)",
            registry=registry,
        )
        self.conflicts = Counter(
            "idempotency_conflict",
            "Idempotency keys reused with a different request (422)",
            registry=registry,
        )
        self.approvals_pending = Gauge(
            "approvals_pending",
            "Approvals waiting for a person, by tool (read from the database by the sweep)",
            ["tool"],
            registry=registry,
        )
        self.approvals_oldest_pending = Gauge(
            "approvals_oldest_pending_seconds",
            "Age of the oldest approval waiting for a person, by tool (0 when none)",
            ["tool"],
            registry=registry,
        )
        self.approval_decisions = Counter(
            "approval_decisions",
            "Approvals decided, by tool and decision (granted, denied, expired, stale, withdrawn)",
            ["tool", "decision"],
            registry=registry,
        )
        self.approval_wait = Histogram(
            "approval_wait_seconds",
            "Seconds from an approval's request to its decision, by tool",
            ["tool"],
            buckets=APPROVAL_WAIT_BUCKETS_S,
            registry=registry,
        )
        # `.labels()` hashes and validates its values on every call (a few µs, three times
        # a request): the children every request updates are kept here. Routes are
        # templates and codes HTTP statuses, so the cache is as bounded as the series.
        self._answered: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._moved: dict[tuple[str, str], Any] = {}
        # Every series an alert may watch exists from the start, at zero.
        for priority in Priority:
            self.sla_breaches.labels(priority=str(priority))
        for state in State:
            self.in_state.labels(state=str(state))

    def set_ticket_counts(
        self, counts: dict[str, int], oldest_s: dict[str, float], sla: dict[str, int]
    ) -> None:
        """Gauges read from the database at scrape time (the same on every replica)."""
        for state in State:
            self.in_state.labels(state=str(state)).set(counts.get(str(state), 0))
            self.oldest_in_state.labels(state=str(state)).set(oldest_s.get(str(state), 0))
        for status, value in sla.items():
            self.sla_now.labels(status=status).set(value)

    def set_pending_approvals(
        self, tools: tuple[str, ...], pending: dict[str, tuple[int, float]]
    ) -> None:
        """Pending approvals per tool (count, oldest age in s); tools the policy gates and
        have none pending read 0."""
        for tool in {*tools, *pending}:
            count, oldest = pending.get(tool, (0, 0.0))
            self.approvals_pending.labels(tool=tool).set(count)
            self.approvals_oldest_pending.labels(tool=tool).set(oldest)

    def forget_database_gauges(self) -> None:
        for gauge in (self.in_state, self.oldest_in_state, self.sla_now):
            gauge.clear()

    def answered(self, route: str, status: int) -> tuple[Any, Any]:
        """The dispatch_api_requests child of (route, status) and the latency child of
        `route`."""
        children = self._answered.get((route, status))
        if children is None:
            children = (self.requests.labels(route, str(status)), self.latency_ms.labels(route))
            self._answered[(route, status)] = children
        return children

    def transition(self, before: str, after: str) -> Any:
        """The state_transitions child of (before, after)."""
        child = self._moved.get((before, after))
        if child is None:
            child = self._moved[(before, after)] = self.transitions.labels(before, after)
        return child
