"""Evidence items in PostgreSQL: the bounded views of a ticket's evidence and its pages.

A ticket view never loads every item: it reads counts per kind and tag (what the evidence
rules decide on) and the newest few items; the full list is read a page at a time.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from ..domain import EvidenceKind


@dataclass(frozen=True, slots=True)
class EvidenceRecord:
    id: str
    kind: EvidenceKind
    tag: str | None
    content_type: str
    size_bytes: int
    sha256: str
    uri: str | None
    stored_inline: bool
    description: str | None
    captured_by_type: str
    captured_by_id: str
    captured_by_role: str
    captured_at: datetime
    request_id: str | None


#: Evidence items embedded in one ticket's view (GET, action answers) and in a queue row;
#: the rest is paged at GET /v1/tickets/{id}/evidence.
TICKET_EVIDENCE_ITEMS = 20
QUEUE_EVIDENCE_ITEMS = 5

_EVIDENCE_FIELDS = """
        'id', e.id, 'kind', e.kind, 'tag', e.tag, 'content_type', e.content_type,
        'size_bytes', e.size_bytes, 'sha256', e.sha256, 'uri', e.uri,
        'stored_inline', e.stored_inline, 'description', e.description,
        'captured_by_type', e.captured_by_type, 'captured_by_id', e.captured_by_id,
        'captured_by_role', e.captured_by_role, 'captured_at', e.captured_at,
        'request_id', e.request_id"""


def _newest_evidence_json(items: int) -> str:
    """The ticket's newest `items` evidence items, oldest first. JSON is built after the
    LIMIT, so a ticket with thousands of items costs a top-N pick, not thousands of objects."""
    return f"""
    SELECT coalesce(jsonb_agg(jsonb_build_object({_EVIDENCE_FIELDS})
        ORDER BY e.captured_at, e.id), '[]'::jsonb) FROM (
        SELECT e.id, e.kind, e.tag, e.content_type, e.size_bytes, e.sha256, e.uri,
            e.content IS NOT NULL AS stored_inline, e.description, e.captured_by_type,
            e.captured_by_id, e.captured_by_role, e.captured_at, e.request_id
        FROM evidence e WHERE e.ticket_id = t.id
        ORDER BY e.captured_at DESC, e.id DESC LIMIT {int(items)}) e
"""


#: How many items of each kind and tag: what the evidence rules decide on, read from the
#: evidence_by_ticket_kind index without loading an item.
_EVIDENCE_TALLY_JSON = """
    SELECT coalesce(jsonb_agg(jsonb_build_object('kind', g.kind, 'tag', g.tag, 'count', g.n)
        ORDER BY g.kind, g.tag), '[]'::jsonb)
    FROM (SELECT e.kind, e.tag, count(*) AS n FROM evidence e WHERE e.ticket_id = t.id
          GROUP BY e.kind, e.tag) g
"""


def with_evidence(items: int) -> str:
    newest = _newest_evidence_json(items)
    return f"({newest}) AS evidence, ({_EVIDENCE_TALLY_JSON}) AS evidence_tally"


#: Kinds by stored value: a dict lookup, where calling the enum costs about a microsecond
#: (a ticket read looks up a kind per item shown and per tally row).
KINDS: dict[str, EvidenceKind] = {k.value: k for k in EvidenceKind}


def from_json(raw: dict[str, Any]) -> EvidenceRecord:
    """One item as the views' JSON subquery renders it."""
    return EvidenceRecord(
        id=raw["id"],
        kind=KINDS[raw["kind"]],
        tag=raw["tag"],
        content_type=raw["content_type"],
        size_bytes=raw["size_bytes"],
        sha256=raw["sha256"],
        uri=raw["uri"],
        stored_inline=raw["stored_inline"],
        description=raw["description"],
        captured_by_type=raw["captured_by_type"],
        captured_by_id=raw["captured_by_id"],
        captured_by_role=raw["captured_by_role"],
        captured_at=datetime.fromisoformat(raw["captured_at"]),
        request_id=raw["request_id"],
    )


_EVIDENCE_COLUMNS = (
    "SELECT e.id::text AS id, e.kind, e.tag, e.content_type, e.size_bytes, e.sha256, e.uri,"
    " e.content IS NOT NULL AS stored_inline, e.description, e.captured_by_type,"
    " e.captured_by_id, e.captured_by_role, e.captured_at, e.request_id FROM evidence e"
)


def _evidence_row(row: asyncpg.Record) -> EvidenceRecord:
    return EvidenceRecord(**{**dict(row), "kind": KINDS[row["kind"]]})


async def page(
    conn: asyncpg.Connection | asyncpg.Pool,
    ticket_id: uuid.UUID,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[EvidenceRecord]:
    """The ticket's evidence oldest first, keyset-paginated on (captured_at, id)."""
    if after is None:
        rows = await conn.fetch(
            f"{_EVIDENCE_COLUMNS} WHERE e.ticket_id = $1 ORDER BY e.captured_at, e.id LIMIT $2",
            ticket_id,
            limit,
        )
    else:
        rows = await conn.fetch(
            f"{_EVIDENCE_COLUMNS} WHERE e.ticket_id = $1 AND (e.captured_at, e.id) > ($2, $3)"
            " ORDER BY e.captured_at, e.id LIMIT $4",
            ticket_id,
            after[0],
            after[1],
            limit,
        )
    return [_evidence_row(r) for r in rows]


async def item(
    conn: asyncpg.Connection | asyncpg.Pool, ticket_id: uuid.UUID, evidence_id: uuid.UUID
) -> EvidenceRecord | None:
    row = await conn.fetchrow(
        f"{_EVIDENCE_COLUMNS} WHERE e.ticket_id = $1 AND e.id = $2", ticket_id, evidence_id
    )
    return None if row is None else _evidence_row(row)
