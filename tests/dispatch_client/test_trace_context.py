"""Trace context on the wire: every try carries `traceparent`; a client span is built only
inside a recorded trace (an unrecorded try goes by the session without trace configs)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext

from dispatch_client import DispatchClient
from telemetry import client_trace_config

from .fakes import TICKET, TOKEN, context, roomy_config


@pytest.fixture
async def downstream(unused_tcp_port: int) -> AsyncIterator[tuple[str, list[str | None]]]:
    seen: list[str | None] = []

    async def ticket(request: web.Request) -> web.Response:
        seen.append(request.headers.get("traceparent"))
        return web.json_response({"id": request.match_info["id"]})

    app = web.Application()
    app.router.add_get("/v1/tickets/{id}", ticket)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    yield f"http://127.0.0.1:{unused_tcp_port}", seen
    await runner.cleanup()


@pytest.mark.parametrize("recorded", [True, False], ids=["recorded", "unrecorded"])
async def test_a_try_carries_its_trace_context_and_has_a_client_span_only_when_recorded(
    spans: InMemorySpanExporter, downstream: tuple[str, list[str | None]], recorded: bool
) -> None:
    base, seen = downstream
    if recorded:
        scope = trace.get_tracer("t").start_as_current_span("caller")
    else:
        parent = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, False)
        scope = trace.use_span(NonRecordingSpan(parent))
    spans.clear()
    connector = aiohttp.TCPConnector()
    async with (
        aiohttp.ClientSession(connector=connector, trace_configs=[client_trace_config()]) as s,
        aiohttp.ClientSession(connector=connector, connector_owner=False) as untraced,
    ):
        client = DispatchClient(s, base, TOKEN, roomy_config(), untraced=untraced)
        with scope as caller:
            assert await client.get_ticket(context(), TICKET) == {"id": TICKET}

    ids = caller.get_span_context()
    client_spans = [x for x in spans.get_finished_spans() if x.kind is trace.SpanKind.CLIENT]
    (sent,) = seen
    assert sent is not None
    _, trace_id, parent_id, flags = sent.split("-")
    assert trace_id == format(ids.trace_id, "032x")
    if recorded:
        assert len(client_spans) == 1
        assert parent_id == format(client_spans[0].context.span_id, "016x")
        assert int(flags, 16) & 1  # sampled
    else:
        assert client_spans == []
        assert parent_id == format(ids.span_id, "016x")
        assert not int(flags, 16) & 1
