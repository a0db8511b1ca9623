"""SLA breaches claimed in the database, so each is recorded once whatever the replicas.

A sweep claims overdue targets with `FOR UPDATE SKIP LOCKED` (a ticket being changed right
now is simply taken next time), marks them breached, and appends one `sla_breached` event per
target, in one statement per target.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg

_SWEEP = """
WITH claimed AS (
    SELECT id FROM tickets
    WHERE {met} IS NULL AND {breached} IS NULL AND sla_paused_since IS NULL
      AND state NOT IN ('COMPLETED', 'CANCELLED') AND {due} < $1
    ORDER BY {due}
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), marked AS (
    UPDATE tickets t SET {breached} = $1, last_seq = t.last_seq + 1
    FROM claimed WHERE t.id = claimed.id
    RETURNING t.id, t.last_seq, t.state, t.priority, t.{due} AS due_at, t.sla_paused_s,
              t.provider_hold_s + coalesce(extract(epoch FROM $1 - t.provider_hold_since), 0)
                  AS provider_hold_s
)
INSERT INTO timeline_events (ticket_id, seq, at, type, from_state, to_state, reason,
                             actor_type, actor_id, role, details)
SELECT id, last_seq, $1, 'sla_breached', state, state, '{target} target missed',
       'system', 'sla-sweeper', 'system',
       jsonb_build_object(
           'target', '{target}', 'priority', priority, 'due_at', due_at,
           'late_by_s', round(extract(epoch FROM $1 - due_at)::numeric, 3),
           'customer_hold_s', round(sla_paused_s::numeric, 3),
           'provider_hold_s', round(provider_hold_s::numeric, 3),
           'delay_cause', CASE WHEN provider_hold_s > 0 THEN 'provider' ELSE 'unattributed' END)
FROM marked
RETURNING details->>'priority' AS priority
"""

_TARGETS = {
    "response": ("responded_at", "response_breached_at", "response_due_at"),
    "resolution": ("resolved_at", "resolution_breached_at", "resolution_due_at"),
}


async def sweep(conn: asyncpg.Connection, now: datetime, batch: int = 1000) -> list[str]:
    """Record every overdue target not yet recorded; the priorities of those recorded."""
    priorities: list[str] = []
    for target, (met, breached, due) in _TARGETS.items():
        sql = _SWEEP.format(target=target, met=met, breached=breached, due=due)
        async with conn.transaction():
            rows = await conn.fetch(sql, now, batch)
        priorities += [r["priority"] for r in rows]
    return priorities


_EFFECTIVE_NOW = "coalesce(sla_paused_since, $1)"
_BREACHED = (
    f"((responded_at IS NULL AND response_due_at < {_EFFECTIVE_NOW})"
    f" OR (resolved_at IS NULL AND resolution_due_at < {_EFFECTIVE_NOW}))"
)
_AT_RISK = (
    f"NOT {_BREACHED} AND ((responded_at IS NULL AND response_due_at < {_EFFECTIVE_NOW} + $2)"
    f" OR (resolved_at IS NULL AND resolution_due_at < {_EFFECTIVE_NOW} + $2))"
)
_ACTIVE = "state NOT IN ('COMPLETED', 'CANCELLED')"


async def listing(
    conn: asyncpg.Connection | asyncpg.Pool,
    status: str,
    now: datetime,
    at_risk: timedelta,
    limit: int,
) -> list[Any]:
    """Active tickets breached (or at risk) now, the most urgent first."""
    where = _BREACHED if status == "breached" else _AT_RISK
    rows: list[Any] = await conn.fetch(
        f"SELECT id FROM tickets WHERE {_ACTIVE} AND {where} AND $2::interval IS NOT NULL"
        " ORDER BY least(CASE WHEN responded_at IS NULL THEN response_due_at END,"
        " CASE WHEN resolved_at IS NULL THEN resolution_due_at END) LIMIT $3",
        now,
        at_risk,
        limit,
    )
    return rows


async def counts(
    conn: asyncpg.Connection | asyncpg.Pool, now: datetime, at_risk: timedelta
) -> dict[str, int]:
    row = await conn.fetchrow(
        f"SELECT count(*) FILTER (WHERE {_BREACHED}) AS breached,"
        f" count(*) FILTER (WHERE {_AT_RISK}) AS at_risk FROM tickets WHERE {_ACTIVE}",
        now,
        at_risk,
    )
    assert row is not None  # an aggregate without GROUP BY answers exactly one row
    return {"breached": row["breached"], "at_risk": row["at_risk"]}
