"""A ticket action in two round trips, without BEGIN/COMMIT: read, then one atomic write.

`read` is one statement: the ticket with its evidence, the answer stored under the key (if
any) and whether the call already asked for an approval. Nothing is locked; `apply` is one
statement (the `act_on_ticket` function, migration 0009) that claims the key with its
answer, applies the change only if the ticket is still at the version read, and appends the
timeline event — or changes nothing and says why. One statement outside a transaction is a
transaction of its own: all of it commits or none of it does.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

import asyncpg

from ..domain import SlaState, Ticket
from ._evidence import TICKET_EVIDENCE_ITEMS, with_evidence
from ._idempotency import IdempotencyKey, StoredResponse, in_progress, stored_answer
from ._tickets import Event, TicketRecord, _event_values, _record, _ticket_values

#: $1 ticket, $2 principal, $3 key, $4 request id (NULL: the call is never gated).
_READ = (
    f"SELECT t.*, {with_evidence(TICKET_EVIDENCE_ITEMS)}, k.fingerprint AS key_fingerprint,"
    " k.method AS key_method, k.path AS key_path, k.status_code AS key_status,"
    " k.response_body AS key_body, EXISTS (SELECT 1 FROM approvals a"
    " WHERE a.principal_id = $2 AND a.request_id = $4) AS approval_asked"
    " FROM (SELECT 1) one LEFT JOIN tickets t ON t.id = $1"
    " LEFT JOIN idempotency_keys k ON k.principal_id = $2 AND k.key = $3"
)
_APPLY = f"SELECT * FROM act_on_ticket({', '.join(f'${i}' for i in range(1, 45))})"
#: SQLSTATE act_on_ticket raises when the key's first user holds it past lock_timeout.
_KEY_BUSY = "DB409"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What `read` saw: the ticket (None when missing), the answer already stored under
    the key (None when the key is free), and whether an approval was asked for the call."""

    record: TicketRecord | None
    stored: StoredResponse | None
    approval_asked: bool


async def read(
    conn: asyncpg.Connection, ticket_id: uuid.UUID, key: IdempotencyKey, request_id: str | None
) -> Snapshot:
    """Raises 422 `idempotency_conflict` when the key was used for a different request."""
    row = await conn.fetchrow(_READ, ticket_id, key.principal_id, key.key, request_id)
    assert row is not None  # it selects from a one-row subquery: always one row
    stored = None
    if row["key_fingerprint"] is not None:
        stored = stored_answer(
            key,
            row["key_fingerprint"],
            row["key_method"],
            row["key_path"],
            row["key_status"],
            row["key_body"],
        )
    record = None if row["id"] is None else _record(row)
    return Snapshot(record, stored, row["approval_asked"])


async def apply(
    conn: asyncpg.Connection,
    key: IdempotencyKey,
    response: StoredResponse,
    before: TicketRecord,
    after: Ticket,
    sla: SlaState,
    event: Event,
) -> Literal["applied", "stale"] | StoredResponse:
    """Claim `key` with `response`, write the ticket's values and append `event`, only if
    the ticket's newest event is still `event.seq - 1`. 'stale' when it is not (or the key
    was purged under us): nothing was written. The stored answer when the key was taken
    meanwhile (raises 422 `idempotency_conflict` when for a different request)."""
    state_changed = before.ticket.state is not after.state
    try:
        row = await conn.fetchrow(
            _APPLY,
            key.principal_id,
            key.key,
            key.fingerprint,
            key.method,
            key.path,
            response.status,
            response.body,
            uuid.UUID(before.ticket.id),
            state_changed,
            *_ticket_values(after, sla),
            *_event_values(event),
        )
    except asyncpg.PostgresError as exc:
        if exc.sqlstate == _KEY_BUSY:
            raise in_progress() from exc
        raise
    if row is None:
        return "stale"
    if row["outcome"] == "stored":
        return stored_answer(
            key,
            row["stored_fingerprint"],
            row["stored_method"],
            row["stored_path"],
            row["stored_status"],
            row["stored_body"],
        )
    return "applied" if row["outcome"] == "applied" else "stale"
