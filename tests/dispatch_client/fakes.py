"""Fakes for dispatch_client tests: a hand-moved clock, sleeps that never really wait, and a
harness over a real aiohttp session whose requests `aioresponses` answers."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aioresponses import aioresponses
from aioresponses.core import RequestCall

from dispatch_client import (
    AttemptObserver,
    BreakerConfig,
    BudgetConfig,
    CallContext,
    DispatchClient,
    RetryConfig,
    RetryPolicy,
)

BASE = "http://dispatch-api.test"
TOKEN = "s3cret-token"
TICKETS = f"{BASE}/v1/tickets"
TICKET = f"{BASE}/v1/tickets/T-1"
SEED = 20261127


class _AlreadySent:
    """Stands in for the stream writer of a request that has been sent."""

    output_size = 0


class MockedResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 builds ClientResponse without the `stream_writer` argument that
    aiohttp 3.14 requires (pnuckowski/aioresponses#289); supply a stand-in."""

    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", _AlreadySent())
        super().__init__(method, url, **kwargs)


class FakeClock:
    """A monotonic clock the test (or a fake sleep) moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeSleep:
    """Records each requested delay and moves the clock by it, without waiting."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.clock.advance(delay)
        await asyncio.sleep(0)  # a scheduling point, no real time


class ParkedSleep:
    """A sleep that never ends: it signals `entered` and waits on an event nobody sets."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.never = asyncio.Event()
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.entered.set()
        await self.never.wait()


@dataclass
class Observed:
    """What an AttemptObserver saw."""

    calls: list[tuple[str, int, str, float]] = field(default_factory=list)

    def __call__(self, ctx: CallContext, attempt: int, outcome: str, seconds: float) -> None:
        self.calls.append((ctx.request_id, attempt, outcome, seconds))


def context(
    request_id: str = "req-0001",
    tool_name: str = "tech.complete",
    **extra: str | bool | None,
) -> CallContext:
    fields: dict[str, Any] = {
        "request_id": request_id,
        "correlation_id": "corr-42",
        "tool_name": tool_name,
        "actor_type": "agent",
        "actor_id": "agent-7",
        "actor_role": "dispatcher",
    }
    fields.update(extra)
    return CallContext(**fields)


def roomy_config(
    policy: RetryPolicy | None = None,
    *,
    budget: BudgetConfig | None = None,
    breaker: BreakerConfig | None = None,
) -> RetryConfig:
    """A config whose budget and breaker stay out of the way unless a test sets them."""
    return RetryConfig(
        default=policy or RetryPolicy(),
        budget=budget or BudgetConfig(ratio=1.0, min_retries_per_s=0.0, max_tokens=1000.0),
        breaker=breaker or BreakerConfig(failure_threshold=1000, open_s=5.0),
    )


@dataclass
class Harness:
    session: aiohttp.ClientSession
    mock: aioresponses
    clock: FakeClock
    sleep: FakeSleep

    def client(
        self,
        config: RetryConfig | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        observer: AttemptObserver | None = None,
        seed: int = SEED,
    ) -> DispatchClient:
        return DispatchClient(
            self.session,
            BASE + "/",
            TOKEN,
            config or roomy_config(),
            clock=self.clock,
            sleep=sleep or self.sleep,
            rng=random.Random(seed),
            observer=observer,
        )

    def requests(self) -> list[RequestCall]:
        """Every request that reached the fake dispatch-api, in order."""
        return [call for calls in self.mock.requests.values() for call in calls]

    def request_count(self) -> int:
        return len(self.requests())
