"""Console sessions: the sha256 of a random cookie mapped to a principal until it expires."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from ..domain import Role
from ._principals import Principal

#: Expired rows deleted per sign-in: the purge rides on sign-ins, so each stays cheap.
PURGE_BATCH = 1000


@dataclass(frozen=True, slots=True)
class Session:
    principal: Principal
    csrf_token: str
    expires_at: datetime


def cookie_digest(cookie: str) -> bytes:
    return hashlib.sha256(cookie.encode()).digest()


async def start(
    conn: asyncpg.Connection | asyncpg.Pool,
    principal: Principal,
    now: datetime,
    lifetime: timedelta,
) -> tuple[str, Session]:
    """A new session for `principal`: (the cookie value, the session). Expired sessions of
    anyone are purged on the way, at most PURGE_BATCH of them."""
    cookie = secrets.token_urlsafe(32)
    session = Session(principal, secrets.token_urlsafe(32), now + lifetime)
    await conn.execute(
        "DELETE FROM console_sessions WHERE cookie_sha256 IN (SELECT cookie_sha256"
        " FROM console_sessions WHERE expires_at <= $1 LIMIT $2)",
        now,
        PURGE_BATCH,
    )
    await conn.execute(
        "INSERT INTO console_sessions (cookie_sha256, principal_id, csrf_token, created_at,"
        " expires_at) VALUES ($1, $2, $3, $4, $5)",
        cookie_digest(cookie),
        principal.id,
        session.csrf_token,
        now,
        session.expires_at,
    )
    return cookie, session


async def find(
    conn: asyncpg.Connection | asyncpg.Pool, cookie: str, now: datetime
) -> Session | None:
    """The live session of `cookie`; None when unknown, expired, or its principal is
    disabled or has become a gateway (the console is for people)."""
    row = await conn.fetchrow(
        "SELECT p.id, p.role, p.trusted_gateway, s.csrf_token, s.expires_at"
        " FROM console_sessions s JOIN principals p ON p.id = s.principal_id"
        " WHERE s.cookie_sha256 = $1 AND s.expires_at > $2 AND p.disabled_at IS NULL",
        cookie_digest(cookie),
        now,
    )
    if row is None or row["trusted_gateway"]:
        return None
    principal = Principal(row["id"], Role(row["role"]), row["trusted_gateway"])
    return Session(principal, row["csrf_token"], row["expires_at"])


async def end(conn: asyncpg.Connection | asyncpg.Pool, cookie: str) -> bool:
    """Delete the session of `cookie`; whether there was one."""
    result: str = await conn.execute(
        "DELETE FROM console_sessions WHERE cookie_sha256 = $1", cookie_digest(cookie)
    )
    return result != "DELETE 0"
