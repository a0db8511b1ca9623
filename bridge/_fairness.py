"""Per-agent-key admission: how many calls, and how many request-body bytes, one key may
have in flight at once.

The global cap (DISPATCH_MAX_IN_FLIGHT) protects the bridge; these protect the other keys.
Without them one agent can fill the whole global budget (and dispatch-api's connections)
with its heaviest calls, and every other agent queues behind it or is shed. The per-key
call cap defaults far below the global one (16 of 256), so it takes 16 saturating keys to
fill the bridge; the byte cap bounds what one key's uploads hold in memory and push
downstream at once (16 MiB: three 5 MiB evidence uploads).

A refusal happens before any work, like the global one: nothing was done, retry shortly
(jittered, so a refused burst does not come back in step). The rate limiter's token bucket
bounds how often a key calls; this bounds how much it has running, which is what a burst
of slow, heavy calls costs.
"""

from __future__ import annotations

import random
from collections import Counter

from tools import ToolError


class KeyAdmission:
    def __init__(self, max_calls: int, max_bytes: int) -> None:
        self._max_calls = max_calls
        self._max_bytes = max_bytes
        self._calls: Counter[str] = Counter()
        self._bytes: Counter[str] = Counter()

    def refusal(self, key: str, body_bytes: int) -> ToolError | None:
        """Why `key` may not start a call of `body_bytes` now, or None when it may.

        A key with nothing in flight is always admitted one call, whatever its size (the
        body limit bounds that), so a single upload larger than the byte cap still runs."""
        if self._calls[key] >= self._max_calls:
            return _refused(
                "agent_concurrency",
                f"This agent key already has {self._max_calls} calls in flight (its limit)",
                {"max_in_flight": self._max_calls},
            )
        held = self._bytes[key]
        if held > 0 and held + body_bytes > self._max_bytes:
            return _refused(
                "agent_bytes",
                f"This agent key's calls in flight already hold {held} bytes of request"
                f" bodies; with this one ({body_bytes}) they would exceed its limit of"
                f" {self._max_bytes}",
                {"max_in_flight_bytes": self._max_bytes, "in_flight_bytes": held},
            )
        return None

    def enter(self, key: str, body_bytes: int) -> None:
        self._calls[key] += 1
        self._bytes[key] += body_bytes

    def leave(self, key: str, body_bytes: int) -> None:
        self._calls[key] -= 1
        self._bytes[key] -= body_bytes
        if self._calls[key] <= 0:  # keep the counters bounded by the keys busy now
            del self._calls[key]
            del self._bytes[key]

    def in_flight(self, key: str) -> tuple[int, int]:
        """(calls, body bytes) `key` has in flight."""
        return self._calls[key], self._bytes[key]


def _refused(reason: str, why: str, details: dict[str, int]) -> ToolError:
    return ToolError(
        "rate_limited",
        f"{why}; nothing was done. Wait for your earlier calls to finish, then retry;"
        " other agents are not affected.",
        retryable=True,
        retry_after_ms=random.randint(100, 500),
        details={"reason": reason, **details},
    )
