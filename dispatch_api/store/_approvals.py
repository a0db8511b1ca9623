"""Approvals in PostgreSQL: one row per gated call, decided once under its row lock.

Lock order, everywhere: the approval row, then the call's Idempotency-Key, then the ticket
row (a re-sent call takes the key, then the ticket, and only reads the approval), so two
requests touching the same approval never wait on each other in a circle.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from ..domain import Actor, ActorType, Role
from ._idempotency import IdempotencyKey


@dataclass(frozen=True, slots=True)
class ApprovalRecord:
    id: str
    #: The requesting principal (the gateway) and the call's request id: the row's key.
    principal_id: str
    request_id: str
    #: The original call's Idempotency-Key: the bound call's answer is stored under it.
    key: IdempotencyKey
    action: str
    tool: str
    arguments: dict[str, Any]
    arguments_sha256: str
    requested_by: Actor
    correlation_id: str | None
    trace_id: str | None
    ticket_id: str
    ticket_version: int
    ticket_state: str
    ticket_priority: str | None
    rule: str
    rule_version: str
    approvers: tuple[str, ...]
    requested_at: datetime
    expires_at: datetime
    status: str = "pending"
    decided_at: datetime | None = None
    decided_by_id: str | None = None
    decided_by_role: str | None = None
    reason: str | None = None
    result_status: int | None = None
    result_body: bytes | None = None


@dataclass(frozen=True, slots=True)
class ApprovalFilter:
    status: str | None = None
    ticket_id: uuid.UUID | None = None
    #: (principal id, actor id): only the approvals this actor requested; None: all.
    requested_by: tuple[str, str] | None = None


_COLUMNS = (
    "id, principal_id, request_id, idempotency_key, method, path, fingerprint, action, tool,"
    " arguments, arguments_sha256, actor_type, actor_id, actor_role, tool_name,"
    " correlation_id, trace_id, ticket_id, ticket_version, ticket_state, ticket_priority,"
    " rule, rule_version, approvers, requested_at, expires_at, status, decided_at,"
    " decided_by_id, decided_by_role, reason, result_status, result_body"
)


def _record(row: asyncpg.Record) -> ApprovalRecord:
    return ApprovalRecord(
        id=str(row["id"]),
        principal_id=row["principal_id"],
        request_id=row["request_id"],
        key=IdempotencyKey(
            row["principal_id"],
            row["idempotency_key"],
            row["method"],
            row["path"],
            bytes(row["fingerprint"]),
        ),
        action=row["action"],
        tool=row["tool"],
        arguments=orjson.loads(row["arguments"]),
        arguments_sha256=row["arguments_sha256"],
        requested_by=Actor(
            ActorType(row["actor_type"]), row["actor_id"], Role(row["actor_role"]), row["tool_name"]
        ),
        correlation_id=row["correlation_id"],
        trace_id=row["trace_id"],
        ticket_id=str(row["ticket_id"]),
        ticket_version=row["ticket_version"],
        ticket_state=row["ticket_state"],
        ticket_priority=row["ticket_priority"],
        rule=row["rule"],
        rule_version=row["rule_version"],
        approvers=tuple(row["approvers"]),
        requested_at=row["requested_at"],
        expires_at=row["expires_at"],
        status=row["status"],
        decided_at=row["decided_at"],
        decided_by_id=row["decided_by_id"],
        decided_by_role=row["decided_by_role"],
        reason=row["reason"],
        result_status=row["result_status"],
        result_body=None if row["result_body"] is None else bytes(row["result_body"]),
    )


async def insert(conn: asyncpg.Connection, a: ApprovalRecord) -> None:
    await conn.execute(
        f"INSERT INTO approvals ({_COLUMNS}) VALUES ({', '.join(f'${i}' for i in range(1, 34))})",
        uuid.UUID(a.id),
        a.principal_id,
        a.request_id,
        a.key.key,
        a.key.method,
        a.key.path,
        a.key.fingerprint,
        a.action,
        a.tool,
        orjson.dumps(a.arguments).decode(),
        a.arguments_sha256,
        str(a.requested_by.type),
        a.requested_by.id,
        str(a.requested_by.role),
        a.requested_by.tool_name,
        a.correlation_id,
        a.trace_id,
        uuid.UUID(a.ticket_id),
        a.ticket_version,
        a.ticket_state,
        a.ticket_priority,
        a.rule,
        a.rule_version,
        list(a.approvers),
        a.requested_at,
        a.expires_at,
        a.status,
        a.decided_at,
        a.decided_by_id,
        a.decided_by_role,
        a.reason,
        a.result_status,
        a.result_body,
    )


async def find(
    conn: asyncpg.Connection, principal_id: str, request_id: str
) -> ApprovalRecord | None:
    """The approval of the call `request_id` of `principal_id`, if one was asked for."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM approvals WHERE principal_id = $1 AND request_id = $2",
        principal_id,
        request_id,
    )
    return None if row is None else _record(row)


async def get(
    conn: asyncpg.Connection | asyncpg.Pool, approval_id: uuid.UUID, *, lock: bool = False
) -> ApprovalRecord | None:
    """The approval; with `lock`, locked until the transaction ends (decisions take it)."""
    suffix = " FOR UPDATE" if lock else ""
    sql = f"SELECT {_COLUMNS} FROM approvals WHERE id = $1{suffix}"
    row = await conn.fetchrow(sql, approval_id)
    return None if row is None else _record(row)


async def decide(
    conn: asyncpg.Connection,
    a: ApprovalRecord,
) -> None:
    """Write the decision fields of `a` (status, who, when, why, the bound call's result)."""
    await conn.execute(
        "UPDATE approvals SET status = $2, decided_at = $3, decided_by_id = $4,"
        " decided_by_role = $5, reason = $6, result_status = $7, result_body = $8"
        " WHERE id = $1",
        uuid.UUID(a.id),
        a.status,
        a.decided_at,
        a.decided_by_id,
        a.decided_by_role,
        a.reason,
        a.result_status,
        a.result_body,
    )


async def page(
    conn: asyncpg.Connection | asyncpg.Pool,
    where: ApprovalFilter,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[ApprovalRecord]:
    """Oldest first by (requested_at, id), after the keyset `after`."""
    clauses: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if where.status is not None:
        clauses.append(f"status = {arg(where.status)}")
    if where.ticket_id is not None:
        clauses.append(f"ticket_id = {arg(where.ticket_id)}")
    if where.requested_by is not None:
        principal, actor = where.requested_by
        clauses.append(f"principal_id = {arg(principal)} AND actor_id = {arg(actor)}")
    if after is not None:
        clauses.append(f"(requested_at, id) > ({arg(after[0])}, {arg(after[1])})")
    sql = f"SELECT {_COLUMNS} FROM approvals"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += f" ORDER BY requested_at, id LIMIT {arg(limit)}"
    return [_record(r) for r in await conn.fetch(sql, *args)]


async def recent_decided(
    conn: asyncpg.Connection | asyncpg.Pool, requested_by: tuple[str, str] | None, limit: int
) -> list[ApprovalRecord]:
    """Decided approvals, most recently requested first (the request-time index serves it;
    every approval is decided within its expiry, so this is close to decision order)."""
    sql = f"SELECT {_COLUMNS} FROM approvals WHERE status <> 'pending'"
    args: list[Any] = []
    if requested_by is not None:
        sql += " AND principal_id = $1 AND actor_id = $2"
        args += requested_by
    sql += f" ORDER BY requested_at DESC, id DESC LIMIT ${len(args) + 1}"
    return [_record(r) for r in await conn.fetch(sql, *args, limit)]


async def claim_due(conn: asyncpg.Connection, now: datetime) -> ApprovalRecord | None:
    """One pending approval past its expiry, locked; one another replica (or an approver)
    holds is skipped: whoever holds it decides it."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM approvals WHERE status = 'pending' AND expires_at <= $1"
        " ORDER BY expires_at LIMIT 1 FOR UPDATE SKIP LOCKED",
        now,
    )
    return None if row is None else _record(row)


#: Events that record something about a ticket without changing it: approvals themselves,
#: refused actions and SLA breaches. A P1 held for approval breaches its response target
#: while it waits; that must not make the very approval it waits for stale.
_UNCHANGING = ["sla_breached", "action_rejected", "completion_rejected"]


async def ticket_changed(conn: asyncpg.Connection, ticket_id: str, version: int) -> bool:
    """Whether the ticket changed after `version` (its seq): any event but the unchanging."""
    changed: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM timeline_events WHERE ticket_id = $1 AND seq > $2"
        " AND type NOT LIKE 'approval\\_%' AND type <> ALL($3::text[]))",
        uuid.UUID(ticket_id),
        version,
        _UNCHANGING,
    )
    return changed


async def pending_by_tool(
    conn: asyncpg.Connection | asyncpg.Pool, now: datetime
) -> dict[str, tuple[int, float]]:
    """Tool -> (pending approvals, age in seconds of the oldest)."""
    rows = await conn.fetch(
        "SELECT tool, count(*) AS n, min(requested_at) AS oldest FROM approvals"
        " WHERE status = 'pending' GROUP BY tool"
    )
    return {r["tool"]: (r["n"], max(0.0, (now - r["oldest"]).total_seconds())) for r in rows}
