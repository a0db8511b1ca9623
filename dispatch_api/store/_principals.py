"""Principals: bearer tokens (stored as sha256) mapped to an id, a role and gateway trust."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import asyncpg

from ..domain import Role


@dataclass(frozen=True, slots=True)
class Principal:
    id: str
    role: Role
    trusted_gateway: bool


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token(prefix: str = "dsp") -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


async def find_by_token(conn: asyncpg.Connection | asyncpg.Pool, token: str) -> Principal | None:
    row = await conn.fetchrow(
        "SELECT id, role, trusted_gateway FROM principals"
        " WHERE token_sha256 = $1 AND disabled_at IS NULL",
        token_digest(token),
    )
    if row is None:
        return None
    return Principal(row["id"], Role(row["role"]), row["trusted_gateway"])


async def upsert(
    conn: asyncpg.Connection | asyncpg.Pool,
    principal_id: str,
    role: Role,
    token: str,
    *,
    trusted_gateway: bool = False,
) -> Principal:
    """Create or replace the principal `principal_id` with a new token."""
    await conn.execute(
        "INSERT INTO principals (id, token_sha256, role, trusted_gateway) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (id) DO UPDATE SET token_sha256 = EXCLUDED.token_sha256,"
        " role = EXCLUDED.role, trusted_gateway = EXCLUDED.trusted_gateway, disabled_at = NULL",
        principal_id,
        token_digest(token),
        str(role),
        trusted_gateway,
    )
    return Principal(principal_id, role, trusted_gateway)
