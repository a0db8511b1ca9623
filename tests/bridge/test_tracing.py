"""One trace from the agent through bridge, dispatch-api and PostgreSQL, and logs that say so."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, SamplingResult, TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode

from testkit.api import COMPLETE_TICKET, WINDOW, parsed_logs

from .conftest import Bridge

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = {"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"}


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def _in_trace(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if s.context is not None and _hex(s.context.trace_id, 32) == TRACE_ID]


def _parent(span: ReadableSpan) -> str | None:
    return None if span.parent is None else _hex(span.parent.span_id, 16)


def _id(span: ReadableSpan) -> str:
    assert span.context is not None
    return _hex(span.context.span_id, 16)


def _one(spans: list[ReadableSpan], name: str, kind: SpanKind) -> ReadableSpan:
    found = [s for s in spans if s.name == name and s.kind is kind]
    assert len(found) == 1, [(s.name, s.kind) for s in spans]
    return found[0]


async def test_a_tool_call_is_one_trace_from_the_caller_to_the_database(
    bridge: Bridge, spans: InMemorySpanExporter
) -> None:
    spans.clear()

    reply = await bridge.invoke(
        "ticket.create", COMPLETE_TICKET, tool_call_id="call-7", headers=TRACEPARENT
    )

    assert reply.body["trace_id"] == TRACE_ID
    trace = _in_trace(spans.get_finished_spans())
    server = _one(trace, "POST /v1/tools/{name}/invoke", SpanKind.SERVER)
    tool = _one(trace, "execute_tool ticket.create", SpanKind.INTERNAL)
    client = _one(trace, "POST", SpanKind.CLIENT)
    api = _one(trace, "POST /v1/tickets", SpanKind.SERVER)
    database = [s for s in trace if s.attributes and s.attributes.get("db.system") == "postgresql"]
    assert _parent(server) == CALLER_SPAN
    assert _parent(tool) == _id(server)
    assert _parent(client) == _id(tool)
    assert _parent(api) == _id(client)
    assert database, "asyncpg spans are missing"
    assert all(_parent(s) == _id(api) for s in database)
    assert tool.attributes is not None
    assert dict(tool.attributes) == {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "ticket.create",
        "gen_ai.tool.call.id": "call-7",
    }
    assert all("db.statement.parameters" not in (s.attributes or {}) for s in database), (
        "query parameters must not be recorded"
    )
    # the timeline records the same trace
    assert reply.body["result"]["event"]["trace_id"] == TRACE_ID


async def test_a_failed_tool_call_marks_its_span_as_a_tool_error(
    bridge: Bridge, spans: InMemorySpanExporter
) -> None:
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    spans.clear()

    await bridge.invoke(
        "tech.arrive", {"ticket_id": created.body["result"]["ticket"]["id"]}, headers=TRACEPARENT
    )

    tool = _one(
        _in_trace(spans.get_finished_spans()), "execute_tool tech.arrive", SpanKind.INTERNAL
    )
    assert tool.attributes is not None
    assert tool.attributes["error.type"] == "tool_error"
    assert tool.status.status_code is StatusCode.ERROR


async def test_a_retried_call_shows_one_client_span_per_try(
    bridge: Bridge, spans: InMemorySpanExporter
) -> None:
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    tid = created.body["result"]["ticket"]["id"]
    bridge.proxy.drop_responses = 1
    spans.clear()

    reply = await bridge.invoke(
        "ticket.schedule", {"ticket_id": tid, **WINDOW}, headers=TRACEPARENT
    )

    assert reply.status == 200, reply.body
    trace = _in_trace(spans.get_finished_spans())
    tool = _one(trace, "execute_tool ticket.schedule", SpanKind.INTERNAL)
    http_tries = (s for s in trace if s.kind is SpanKind.CLIENT and s.name == "POST")
    tries = sorted(http_tries, key=lambda s: s.start_time or 0)
    assert [_parent(s) for s in tries] == [_id(tool), _id(tool)]
    assert [(s.attributes or {}).get("http.request.resend_count") for s in tries] == [None, 1]
    assert tries[0].status.status_code is StatusCode.ERROR
    # both tries reached dispatch-api (the first answer was lost), each as its own server span
    served = [s for s in trace if s.name == "POST /v1/tickets/{ticket_id}/schedule"]
    assert sorted(_parent(s) or "" for s in served) == sorted(_id(s) for s in tries)


async def test_both_services_log_the_trace_with_their_own_span_ids(
    bridge: Bridge, spans: InMemorySpanExporter, log_lines: list[bytes]
) -> None:
    spans.clear()
    log_lines.clear()

    reply = await bridge.invoke(
        "ticket.create", COMPLETE_TICKET, headers={**TRACEPARENT, "X-Correlation-ID": "case-77"}
    )

    trace = _in_trace(spans.get_finished_spans())
    bridge_server = _one(trace, "POST /v1/tools/{name}/invoke", SpanKind.SERVER)
    api_server = _one(trace, "POST /v1/tickets", SpanKind.SERVER)
    lines = [line for line in parsed_logs(log_lines) if line["trace_id"] == TRACE_ID]
    by_event = {(line["service"], line["event"]): line for line in lines}
    bridge_line = by_event[("bridge", "http_request")]
    api_line = by_event[("dispatch-api", "http_request")]
    assert ("bridge", "upstream_attempt") not in by_event  # one try: the request line tells it
    assert bridge_line["attempt"] == 1
    assert bridge_line["span_id"] == _id(bridge_server)
    assert api_line["span_id"] == _id(api_server)
    for line in (bridge_line, api_line):
        assert line["correlation_id"] == "case-77"
        assert line["request_id"] == reply.body["request_id"]
        assert (line["actor_type"], line["actor_id"], line["tool_name"]) == (
            "agent",
            "agent-sup",
            "ticket.create",
        )
    assert api_line["endpoint"] == "/v1/tickets"
    assert api_line["status_code"] == 201
    assert bridge_line["ticket_id"] == api_line["ticket_id"] == reply.body["result"]["ticket"]["id"]


def _drop(sampler: object, *args: Any, **kwargs: Any) -> SamplingResult:
    return SamplingResult(Decision.DROP, None, kwargs.get("trace_state"))


async def test_an_unsampled_call_records_no_span_yet_its_trace_id_reaches_logs_and_timeline(
    bridge: Bridge,
    spans: InMemorySpanExporter,
    log_lines: list[bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sampling decided once, at the request: nothing below an unsampled request builds a
    span, but its trace id is still the envelope's, every log line's and (by traceparent)
    dispatch-api's, on the timeline."""
    monkeypatch.setattr(TraceIdRatioBased, "should_sample", _drop)  # a 0 % sampling ratio
    spans.clear()
    log_lines.clear()

    reply = await bridge.invoke("ticket.create", COMPLETE_TICKET, tool_call_id="call-8")

    trace_id = reply.body["trace_id"]
    assert reply.status == 200
    assert len(trace_id) == 32
    assert int(trace_id, 16)
    assert spans.get_finished_spans() == ()
    assert reply.body["result"]["event"]["trace_id"] == trace_id
    lines = [
        line for line in parsed_logs(log_lines) if line["request_id"] == reply.body["request_id"]
    ]
    assert {(line["service"], line["event"]) for line in lines} == {
        ("bridge", "http_request"),
        ("dispatch-api", "http_request"),
    }
    assert {line["trace_id"] for line in lines} == {trace_id}
