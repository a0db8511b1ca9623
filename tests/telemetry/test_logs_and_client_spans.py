"""Log level and the cost-saving path of client spans: what an operator turning knobs sees."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from telemetry import JsonLog, client_trace_config, tracing_middleware

CLI = Path(sys.executable).parent / "dispatch-bridge"


def test_at_level_warning_request_lines_are_dropped_and_failures_kept() -> None:
    lines: list[bytes] = []
    log = JsonLog("bridge", lines.append, level="warning")

    log.emit("http_request", {"status_code": 200})
    log.emit("upstream_attempt", {"outcome": "TransportFailure"}, level="warning")
    log.emit("log", {"message": "boom"}, level="error")

    assert [orjson.loads(line)["event"] for line in lines] == ["upstream_attempt", "log"]


@pytest.fixture
async def echo_server(unused_tcp_port: int) -> AsyncIterator[str]:
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"traceparent": request.headers.get("traceparent")})

    app = web.Application()
    app.router.add_get("/", echo)
    async with _serving(app, unused_tcp_port) as url:
        yield url + "/"


@asynccontextmanager
async def _serving(app: web.Application, port: int) -> AsyncIterator[str]:
    """`app` listening on loopback at `port`, for the block; its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("sampled", [True, False])
async def test_client_spans_only_for_recorded_traces_but_context_always_travels(
    spans: InMemorySpanExporter, echo_server: str, sampled: bool
) -> None:
    trace_id = 0x0AF7651916CD43DD8448EB211C80319C
    if sampled:
        parent_cm = trace.get_tracer("t").start_as_current_span("caller")
    else:
        parent = SpanContext(trace_id, 0xB7AD6B7169203331, False, TraceFlags(0))
        parent_cm = trace.use_span(NonRecordingSpan(parent))
    spans.clear()
    async with aiohttp.ClientSession(trace_configs=[client_trace_config()]) as session:
        with parent_cm as caller:
            async with session.get(echo_server) as resp:
                sent = (await resp.json())["traceparent"]

    ids = caller.get_span_context()
    client = [s for s in spans.get_finished_spans() if s.kind is trace.SpanKind.CLIENT]
    assert sent.split("-")[1] == format(ids.trace_id, "032x")
    if sampled:
        assert len(client) == 1
        assert sent.split("-")[2] == format(client[0].context.span_id, "016x")
    else:
        assert client == []  # nothing built for a trace nobody records
        assert sent.split("-")[2] == format(ids.span_id, "016x")
        assert sent.endswith("-00")


async def test_database_statements_inside_a_recorded_trace_have_their_spans(
    spans: InMemorySpanExporter, database_url: str
) -> None:
    """Statements skip the instrumentation outside recorded traces (a cost saving with
    nothing to observe); inside one, each still has its span."""
    conn = await asyncpg.connect(database_url)
    try:
        spans.clear()
        with trace.get_tracer("t").start_as_current_span("request"):
            assert await conn.fetchval("SELECT 41 + 1") == 42
    finally:
        await conn.close()

    statements = [s for s in spans.get_finished_spans() if s.kind is trace.SpanKind.CLIENT]
    assert [s.name for s in statements] == ["SELECT"]


@pytest.fixture
async def traced_server(unused_tcp_port: int) -> AsyncIterator[str]:
    """A server behind tracing_middleware: /ok answers with the current span's ids,
    /broken raises, /unavailable answers 503."""

    async def ok(request: web.Request) -> web.Response:
        ids = trace.get_current_span().get_span_context()
        return web.json_response({"span_id": format(ids.span_id, "016x")})

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("the handler broke")

    async def unavailable(request: web.Request) -> web.Response:
        return web.Response(status=503)

    app = web.Application(middlewares=[tracing_middleware("traced", excluded={"/healthz"})])
    app.router.add_get("/ok", ok)
    app.router.add_get("/broken", broken)
    app.router.add_get("/unavailable", unavailable)
    async with _serving(app, unused_tcp_port) as url:
        yield url


async def test_the_server_span_is_current_in_the_handler_and_carries_its_outcome(
    spans: InMemorySpanExporter, traced_server: str
) -> None:
    spans.clear()
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with aiohttp.ClientSession() as session:
        async with session.get(traced_server + "/ok", headers={"traceparent": caller}) as resp:
            seen = (await resp.json())["span_id"]
        async with session.get(traced_server + "/broken") as resp:
            assert resp.status == 500
        async with session.get(traced_server + "/unavailable") as resp:
            assert resp.status == 503

    by_route = {dict(s.attributes or {})["http.route"]: s for s in spans.get_finished_spans()}
    ok, broken, unavailable = by_route["/ok"], by_route["/broken"], by_route["/unavailable"]
    assert ok.kind is trace.SpanKind.SERVER
    assert format(ok.context.span_id, "016x") == seen  # the handler ran inside it
    assert format(ok.context.trace_id, "032x") == caller.split("-")[1]
    assert ok.parent is not None
    assert format(ok.parent.span_id, "016x") == caller.split("-")[2]
    assert dict(ok.attributes or {})["http.response.status_code"] == 200
    assert ok.status.status_code is trace.StatusCode.UNSET
    assert broken.status.status_code is trace.StatusCode.ERROR
    assert broken.status.description == "RuntimeError: the handler broke"
    assert [e.name for e in broken.events] == ["exception"]
    assert unavailable.status.status_code is trace.StatusCode.ERROR
    assert dict(unavailable.attributes or {})["http.response.status_code"] == 503
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing left attached
