"""dispatch-api's Prometheus metrics (names exactly as DESIGN section 6)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from telemetry import LATENCY_BUCKETS_MS

from .domain import Priority, State


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

    def forget_database_gauges(self) -> None:
        for gauge in (self.in_state, self.oldest_in_state, self.sla_now):
            gauge.clear()
