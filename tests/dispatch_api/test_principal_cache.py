"""The principal cache's bounds, with a hand-written pool that counts what reaches it."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest

from dispatch_api.domain import Role
from dispatch_api.errors import Unavailable
from dispatch_api.settings import ApiSettings, SettingsError
from dispatch_api.store import principals
from dispatch_api.web._principal_cache import PrincipalCache


class FakePool:
    """Answers token lookups from `known`; `gate` holds every lookup until it is set."""

    def __init__(self, known: dict[str, tuple[str, Role]] | None = None) -> None:
        self.known = {principals.token_digest(t): v for t, v in (known or {}).items()}
        self.lookups = 0
        self.running = 0
        self.peak = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def acquire(self) -> FakePool:
        return self

    async def release(self, conn: Any) -> None:
        pass

    async def fetchrow(self, sql: str, digest: bytes) -> dict[str, Any] | None:
        self.lookups += 1
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await self.gate.wait()
        finally:
            self.running -= 1
        found = self.known.get(digest)
        if found is None:
            return None
        return {"id": found[0], "role": str(found[1]), "trusted_gateway": False}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_same_unknown_token_reaches_the_database_once_within_the_ttl() -> None:
    pool = FakePool()
    clock = Clock()
    cache = PrincipalCache(ttl_s=30, clock=clock)
    pool.gate.clear()
    together = [asyncio.create_task(cache.lookup(pool, "bad-token")) for _ in range(100)]
    await asyncio.sleep(0)
    pool.gate.set()
    answers = await asyncio.gather(*together)
    later = [await cache.lookup(pool, "bad-token") for _ in range(100)]
    clock.now += 31
    await cache.lookup(pool, "bad-token")

    assert answers == [None] * 100
    assert later == [None] * 100
    assert pool.lookups == 2  # once together, once after the TTL


async def test_never_seen_tokens_are_looked_up_one_at_a_time_and_a_crowd_beyond_is_refused() -> (
    None
):
    pool = FakePool()
    cache = PrincipalCache(concurrency=1, max_waiting=50)
    pool.gate.clear()
    flood = [asyncio.create_task(cache.lookup(pool, secrets.token_urlsafe(16))) for _ in range(80)]
    await asyncio.sleep(0)
    pool.gate.set()
    answers = await asyncio.gather(*flood, return_exceptions=True)
    refused = [a for a in answers if isinstance(a, Unavailable)]

    assert pool.peak == 1
    assert len(refused) == 30
    assert all(e.status == 503 and e.headers == {"Retry-After": "1"} for e in refused)
    assert [a for a in answers if not isinstance(a, Unavailable)] == [None] * 50


async def test_a_flood_of_bad_tokens_does_not_evict_a_valid_one() -> None:
    pool = FakePool({"good": ("sup-1", Role.SUPERVISOR)})
    cache = PrincipalCache(max_entries=100)
    assert (await cache.lookup(pool, "good")) is not None
    for _ in range(1000):
        await cache.lookup(pool, secrets.token_urlsafe(16))
    before = pool.lookups
    found = await cache.lookup(pool, "good")

    assert found is not None
    assert found.id == "sup-1"
    assert pool.lookups == before  # still cached


async def test_a_known_token_is_rechecked_outside_the_bound_for_unknown_ones() -> None:
    pool = FakePool({"good": ("sup-1", Role.SUPERVISOR)})
    clock = Clock()
    cache = PrincipalCache(ttl_s=30, concurrency=1, max_waiting=1, clock=clock)
    await cache.lookup(pool, "good")
    clock.now += 31
    pool.gate.clear()
    flood = [asyncio.create_task(cache.lookup(pool, secrets.token_urlsafe(16))) for _ in range(5)]
    recheck = asyncio.create_task(cache.lookup(pool, "good"))
    await asyncio.sleep(0)
    pool.gate.set()
    found = await recheck
    await asyncio.gather(*flood, return_exceptions=True)

    assert found is not None
    assert found.id == "sup-1"


async def test_a_revoked_token_stops_working_after_the_ttl() -> None:
    pool = FakePool({"good": ("sup-1", Role.SUPERVISOR)})
    clock = Clock()
    cache = PrincipalCache(ttl_s=30, clock=clock)
    assert await cache.lookup(pool, "good") is not None
    pool.known.clear()
    still = await cache.lookup(pool, "good")
    clock.now += 31

    assert still is not None
    assert await cache.lookup(pool, "good") is None


@pytest.mark.parametrize("concurrency", [0, 11])
def test_the_lookup_concurrency_must_fit_the_pool(concurrency: int) -> None:
    with pytest.raises(SettingsError, match="DISPATCH_AUTH_LOOKUP_CONCURRENCY"):
        ApiSettings(auth_lookup_concurrency=concurrency)
