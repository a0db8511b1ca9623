"""A plain ticket action costs two database round trips: one read, one atomic write."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from dispatch_api.settings import ApiSettings
from testkit.api import Api, ready_to_complete, window


@pytest.fixture
def api_settings() -> ApiSettings:
    # One connection, so a query logger on it sees every statement the service sends; no
    # background sweeps to send statements of their own meanwhile.
    return ApiSettings(
        db_pool_min=1,
        db_pool_max=1,
        auth_lookup_concurrency=1,
        metrics_refresh_s=0,
        sla_sweep_interval_s=3600,
        idempotency_purge_interval_s=3600,
    )


async def statements_of(api: Api, tid: str, action: str, key: str) -> tuple[int, list[str]]:
    """The answer's status and the statements the service sent PostgreSQL for it."""
    assert api.app is not None
    pool = next(v for v in api.app.values() if isinstance(v, asyncpg.Pool))
    sent: list[str] = []

    def log(query: asyncpg.connection.LoggedQuery) -> None:
        sent.append(query.query)

    async with pool.acquire() as conn:
        conn.add_query_logger(log)
    try:
        reply = await api.act(tid, action, {"reason": "done"}, key=key)
    finally:
        async with pool.acquire() as conn:
            conn.remove_query_logger(log)
    return reply.status, sent


async def test_completing_a_ticket_sends_two_statements_and_no_begin_or_commit(api: Api) -> None:
    warm = await ready_to_complete(api, 1)  # the principal and the statement cache warmed
    await statements_of(api, warm, "complete", str(uuid.uuid4()))
    tid = await ready_to_complete(api)

    status, sent = await statements_of(api, tid, "complete", str(uuid.uuid4()))

    assert status == 200
    assert len(sent) == 2, sent
    assert not any(s.split()[0].upper() in ("BEGIN", "COMMIT") for s in sent)
    events = await api.timeline(tid)
    assert events[-1]["type"] == "completed"


async def test_a_re_sent_complete_is_replayed_from_one_read(api: Api) -> None:
    tid = await ready_to_complete(api)
    key = str(uuid.uuid4())
    first, _ = await statements_of(api, tid, "complete", key)

    again, sent = await statements_of(api, tid, "complete", key)

    assert (first, again) == (200, 200)
    assert len(sent) == 1, sent
    assert [e["type"] for e in await api.timeline(tid)].count("completed") == 1


async def test_a_traced_action_has_one_database_span_listing_its_statements(
    api: Api, spans: InMemorySpanExporter
) -> None:
    tid = await ready_to_complete(api)
    spans.clear()

    reply = await api.act(tid, "complete", {"reason": "done"})

    assert reply.status == 200
    finished = spans.get_finished_spans()
    server = [s for s in finished if s.kind is SpanKind.SERVER]
    database = [s for s in finished if (s.attributes or {}).get("db.system") == "postgresql"]
    assert len(server) == 1
    assert [s.name for s in database] == ["statements"]
    (span,) = database
    assert span.parent is not None
    assert span.parent.span_id == server[0].context.span_id
    attributes = span.attributes or {}
    assert attributes["db.statement_count"] == 2
    assert attributes["db.operations"] == ("SELECT", "SELECT")
    statements = attributes["db.statements"]
    assert isinstance(statements, tuple)
    assert "act_on_ticket" in statements[1]
    assert tid not in "".join(statements)  # texts only: never the parameters


async def test_a_traced_transaction_has_one_span_from_begin_to_commit(
    api: Api, spans: InMemorySpanExporter
) -> None:
    tid = str((await api.create_ticket())["id"])
    spans.clear()

    reply = await api.act(tid, "schedule", window(2))

    assert reply.status == 200
    database = [
        s
        for s in spans.get_finished_spans()
        if (s.attributes or {}).get("db.system") == "postgresql"
    ]
    assert [s.name for s in database] == ["transaction"]
    operations = (database[0].attributes or {})["db.operations"]
    assert isinstance(operations, tuple)
    assert (operations[0], operations[-1]) == ("BEGIN", "COMMIT")
    assert (database[0].attributes or {})["db.statement_count"] == len(operations)
