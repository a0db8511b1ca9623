"""Agent authentication (API keys, compared in constant time) and per-key rate limits."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .settings import AgentKey


@dataclass(frozen=True, slots=True)
class Agent:
    """An authenticated caller: it acts as actor type `agent` with this id and role.
    `scopes`: what its OAuth token grants (bridge/_scopes.py); None for an agent key (all)."""

    id: str
    role: str
    scopes: frozenset[str] | None = None


class AgentDirectory:
    def __init__(self, keys: Iterable[AgentKey]) -> None:
        self._keys = [(bytes.fromhex(k.key_sha256), Agent(k.id, k.role)) for k in keys]

    def authenticate(self, presented: str) -> Agent | None:
        """The agent whose key this is, or None. Every stored digest is compared, in
        constant time, so timing reveals neither which key matched nor how much of it."""
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for stored, agent in self._keys:
            if hmac.compare_digest(digest, stored):
                found = agent
        return found


class RateLimiter:
    """A token bucket per agent: `burst` calls at once, `per_s` sustained."""

    def __init__(self, per_s: float, burst: int, clock: Callable[[], float]) -> None:
        self._per_s = per_s
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def acquire(self, key: str) -> float | None:
        """Take one token; None when allowed, else the seconds until one is available."""
        now = self._clock()
        tokens, stamp = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - stamp) * self._per_s)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            return None
        self._buckets[key] = (tokens, now)
        return (1 - tokens) / self._per_s
