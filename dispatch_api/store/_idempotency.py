"""Idempotency keys: claim, compare, replay, answer — inside the caller's transaction.

The claim is an `INSERT ... ON CONFLICT DO NOTHING`. A second request with the same key
while the first is uncommitted waits on that insert (PostgreSQL makes it), and gives up after
`lock_timeout`, which this module turns into 409 `request_in_progress`. Once the first
commits, the second finds its stored answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson

from ..errors import Conflict, Unprocessable


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    principal_id: str
    key: str
    method: str
    path: str
    fingerprint: bytes


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    body: bytes
    replayed: bool = False
    #: (from, to) of the state change this answer made; never stored, so replays have none.
    transition: tuple[str | None, str] | None = None
    #: Not stored under the key, which is released instead: a pending approval's answer,
    #: so that the re-sent call asks again how the approval stands.
    transient: bool = False


def canonical_request(method: str, path: str, body: Any) -> bytes:
    """Method, path and the body in canonical form (sorted keys, no whitespace): a key's
    fingerprint is the sha256 of this, so a re-sent request matches whatever its key order."""
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return method.encode() + b" " + path.encode() + b"\n" + canonical


#: $1 principal, $2 key, $3 fingerprint, $4 method, $5 path, $6 now; true when claimed.
_CLAIM = (
    "INSERT INTO idempotency_keys (principal_id, key, fingerprint, method, path,"
    " created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING true"
)
#: $1 principal, $2 key, $3 status code, $4 response body.
_STORE = (
    "UPDATE idempotency_keys SET status_code = $3, response_body = $4"
    " WHERE principal_id = $1 AND key = $2"
)


async def claim(
    conn: asyncpg.Connection, key: IdempotencyKey, now: datetime
) -> StoredResponse | None:
    """Claim `key` for this transaction, or return the answer already stored under it.

    Raises 409 `request_in_progress` while another transaction holds the key and 422
    `idempotency_conflict` when the key was used for a different request.
    """
    try:
        inserted = await conn.fetchval(
            _CLAIM,
            key.principal_id,
            key.key,
            key.fingerprint,
            key.method,
            key.path,
            now,
        )
    except asyncpg.LockNotAvailableError as exc:
        raise in_progress() from exc
    if inserted:
        return None
    row = await conn.fetchrow(
        "SELECT fingerprint, method, path, status_code, response_body FROM idempotency_keys"
        " WHERE principal_id = $1 AND key = $2",
        key.principal_id,
        key.key,
    )
    if row is None:
        # The purge removed the key, expired, between the claim and this read: a retry
        # claims it afresh.
        raise in_progress()
    return stored_answer(key, *row)


def stored_answer(
    key: IdempotencyKey,
    fingerprint: bytes,
    method: str,
    path: str,
    status: int | None,
    body: bytes | None,
) -> StoredResponse:
    """The replay of the answer stored under `key`; raises 422 `idempotency_conflict`
    when the key was used for a different request."""
    if fingerprint != key.fingerprint:
        raise Unprocessable(
            "idempotency_conflict",
            "this Idempotency-Key was already used for a different request;"
            " use a new key for a new request",
            extensions={"original_method": method, "original_path": path},
        )
    if status is None or body is None:  # not committed with an answer yet
        raise in_progress()
    return StoredResponse(status, bytes(body), replayed=True)


def in_progress() -> Conflict:
    return Conflict(
        "request_in_progress",
        "a request with this Idempotency-Key is still being processed; retry shortly",
        headers={"Retry-After": "1"},
        extensions={"retryable": True},
    )


async def store(conn: asyncpg.Connection, key: IdempotencyKey, response: StoredResponse) -> None:
    await conn.execute(
        _STORE,
        key.principal_id,
        key.key,
        response.status,
        response.body,
    )


async def release(conn: asyncpg.Connection, key: IdempotencyKey) -> None:
    """Give up this transaction's claim on `key`: the next request with it starts afresh."""
    await conn.execute(
        "DELETE FROM idempotency_keys WHERE principal_id = $1 AND key = $2",
        key.principal_id,
        key.key,
    )


async def purge(
    conn: asyncpg.Connection | asyncpg.Pool, now: datetime, retention: timedelta
) -> int:
    """Delete keys older than the retention; return how many went."""
    result: str = await conn.execute(
        "DELETE FROM idempotency_keys WHERE created_at < $1", now - retention
    )
    return int(result.split()[-1])
