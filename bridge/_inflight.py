"""Tool calls in flight, for `GET /v1/ops/inflight`: what is running, for whom, how long."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class InFlightCall:
    request_id: str
    tool: str
    ticket_id: str | None
    actor_id: str
    role: str
    correlation_id: str
    trace_id: str | None
    started: float  # on the registry's clock


class InFlightRegistry:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._calls: dict[int, InFlightCall] = {}
        self._next = 0

    def start(self, call: InFlightCall) -> int:
        self._next += 1
        self._calls[self._next] = call
        return self._next

    def finish(self, token: int) -> None:
        self._calls.pop(token, None)

    def __len__(self) -> int:
        return len(self._calls)

    @property
    def started(self) -> int:
        """Calls started since the process began (an idle check compares two readings)."""
        return self._next

    def snapshot(self) -> list[dict[str, Any]]:
        """Calls oldest first, each with its age in milliseconds."""
        now = self._clock()
        calls = sorted(self._calls.values(), key=lambda c: c.started)
        return [
            {
                "age_ms": round((now - c.started) * 1000, 1),
                "tool": c.tool,
                "ticket_id": c.ticket_id,
                "actor_type": "agent",
                "actor_id": c.actor_id,
                "role": c.role,
                "request_id": c.request_id,
                "correlation_id": c.correlation_id,
                "trace_id": c.trace_id,
            }
            for c in calls
        ]
