"""Bearer tokens to principals, with the database kept out of reach of unauthenticated floods.

A token is looked up once per `ttl_s` (a revoked token stops working within it), misses
included, so a repeated bad token costs nothing. What cannot be cached is a flood of
never-seen tokens: those lookups run at most `concurrency` at a time, so the rest of the
pool stays for authenticated work, with at most `max_waiting` queued behind them; beyond
that the request answers 503 with Retry-After at once. A 401 without a lookup would turn
away a valid token during the flood, and an agent does not retry a 401; it does a 503.
A token known to be valid when its entry expires is looked up outside that bound: its
owner is not the flood.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

from ..errors import Unavailable
from ..store import ConnectionPool, Principal, connection, principals


class PrincipalCache:
    def __init__(
        self,
        ttl_s: float = 30.0,
        max_entries: int = 10_000,
        *,
        concurrency: int = 2,
        max_waiting: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_s
        self._max = max_entries
        self._clock = clock
        # Valid and invalid tokens apart: a flood of bad ones evicts only bad ones.
        self._valid: OrderedDict[bytes, tuple[float, Principal]] = OrderedDict()
        self._invalid: OrderedDict[bytes, float] = OrderedDict()
        self._pending: dict[bytes, asyncio.Future[Principal | None]] = {}
        self._unknown_slots = asyncio.Semaphore(concurrency)
        self._max_waiting = max_waiting
        self._waiting = 0

    async def lookup(self, pool: ConnectionPool, token: str) -> Principal | None:
        """The principal of `token`, None when it is unknown or disabled; raises
        Unavailable (503, Retry-After) when too many unknown tokens are being looked up."""
        digest = principals.token_digest(token)
        now = self._clock()
        known = self._valid.get(digest)
        if known is not None and known[0] > now:
            return known[1]
        refused_until = self._invalid.get(digest)
        if refused_until is not None and refused_until > now:
            return None
        pending = self._pending.get(digest)
        if pending is not None:  # the same token already being looked up: share its answer
            return await asyncio.shield(pending)
        future: asyncio.Future[Principal | None] = asyncio.get_running_loop().create_future()
        self._pending[digest] = future
        try:
            if known is not None:
                found = await self._find(pool, token)
            else:
                found = await self._find_unknown(pool, token)
        except BaseException as exc:
            # Those sharing this lookup were not cancelled themselves: they get a 503.
            shared = _busy() if isinstance(exc, asyncio.CancelledError) else exc
            future.set_exception(shared)
            future.exception()  # retrieved: no "never retrieved" warning without sharers
            raise
        finally:
            del self._pending[digest]
        self._remember(digest, found)
        future.set_result(found)
        return found

    async def _find_unknown(self, pool: ConnectionPool, token: str) -> Principal | None:
        if self._waiting >= self._max_waiting:
            raise _busy()
        self._waiting += 1
        try:
            async with self._unknown_slots:
                return await self._find(pool, token)
        finally:
            self._waiting -= 1

    async def _find(self, pool: ConnectionPool, token: str) -> Principal | None:
        async with connection(pool) as conn:
            found: Principal | None = await principals.find_by_token(conn, token)
            return found

    def _remember(self, digest: bytes, found: Principal | None) -> None:
        until = self._clock() + self._ttl
        if found is None:
            self._valid.pop(digest, None)
            _put(self._invalid, digest, until, self._max)
        else:
            self._invalid.pop(digest, None)
            _put(self._valid, digest, (until, found), self._max)


V = TypeVar("V")


def _put(entries: OrderedDict[bytes, V], key: bytes, value: V, limit: int) -> None:
    entries[key] = value
    entries.move_to_end(key)
    while len(entries) > limit:
        entries.popitem(last=False)


def _busy() -> Unavailable:
    return Unavailable(
        "authentication_busy",
        "too many unknown tokens are being checked; retry shortly",
        headers={"Retry-After": "1"},
    )
