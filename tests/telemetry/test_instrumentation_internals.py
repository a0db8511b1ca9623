"""The OpenTelemetry internals telemetry/_tracing.py leans on, so a new instrumentation
release that moves them fails here instead of silently costing CPU or raising mid-request.

pyproject.toml bounds those packages to the minor these tests ran on; raising the bound
means running these first.
"""

from __future__ import annotations

import inspect
import socket
from contextlib import AbstractContextManager, nullcontext

import aiohttp
import asyncpg
import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from telemetry import client_trace_config

OVERRIDDEN = ("_do_execute", "_do_cursor_execute", "_do_prepared_execute")


@pytest.mark.parametrize("name", OVERRIDDEN)
def test_the_asyncpg_instrumentation_still_has_each_method_we_override(name: str) -> None:
    method = getattr(AsyncPGInstrumentor, name, None)

    assert inspect.iscoroutinefunction(method), f"AsyncPGInstrumentor.{name} is gone"
    assert list(inspect.signature(method).parameters) == [
        "self",
        "func",
        "instance",
        "args",
        "kwargs",
    ]


def _unrecorded_parent() -> AbstractContextManager[object]:
    context = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, False, TraceFlags(0)
    )
    return trace.use_span(NonRecordingSpan(context))


@pytest.mark.parametrize("parent", ["recorded", "unrecorded", "none"], ids=lambda p: f"{p}-parent")
async def test_statements_cursors_and_prepared_statements_have_spans_only_in_recorded_traces(
    spans: InMemorySpanExporter, database_url: str, parent: str
) -> None:
    """With no span or an unrecorded one (a background sweep, an unsampled request), no
    statement span is built: the tests sample everything, so a root span would be
    recorded if the override stopped being called."""
    scope: AbstractContextManager[object] = {
        "recorded": lambda: trace.get_tracer("t").start_as_current_span("request"),
        "unrecorded": _unrecorded_parent,
        "none": nullcontext,
    }[parent]()
    conn = await asyncpg.connect(database_url)
    try:
        spans.clear()
        with scope:
            assert await conn.fetchval("SELECT 41 + 1") == 42
            async with conn.transaction():
                assert [r[0] async for r in conn.cursor("SELECT generate_series(1, 3)")] == [
                    1,
                    2,
                    3,
                ]
            statement = await conn.prepare("SELECT 7")
            assert await statement.fetchval() == 7
    finally:
        await conn.close()

    names = [s.name for s in spans.get_finished_spans() if s.kind is trace.SpanKind.CLIENT]
    if parent == "recorded":  # the plain and the prepared SELECT, and the cursor's reads
        assert names.count("SELECT") == 2
        assert "CURSOR: SELECT" in names
    else:
        assert names == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("recorded", [True, False], ids=["recorded", "unrecorded"])
async def test_a_refused_request_raises_the_connection_error_in_and_outside_recorded_traces(
    spans: InMemorySpanExporter, recorded: bool
) -> None:
    """Outside a recorded trace the client span is never started; the instrumentation's
    exception hook must still cope with that (it does today by checking for no span)."""
    scope = (
        trace.get_tracer("t").start_as_current_span("caller") if recorded else _unrecorded_parent()
    )
    spans.clear()
    async with aiohttp.ClientSession(trace_configs=[client_trace_config()]) as session:
        with scope, pytest.raises(aiohttp.ClientConnectorError):
            await session.get(f"http://127.0.0.1:{_closed_port()}/")

    failed = [s for s in spans.get_finished_spans() if s.kind is trace.SpanKind.CLIENT]
    assert len(failed) == (1 if recorded else 0)
