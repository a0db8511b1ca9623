"""Agents call tools over MCP with the official Python SDK client, in both eras: the
`initialize` handshake (legacy, 2025-11-25) and the stateless 2026-07-28 revision (auto).
Tools are called by the names tools/list gives (`tech_complete`), as agents do."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal, cast

import httpx2
import orjson
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, RequestParamsMeta, TextContent
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from testkit.api import COMPLETE_TICKET, WINDOW
from tools import catalog, mcp_tool

from .conftest import AGENTS, Bridge

Mode = Literal["legacy", "auto"]
#: The revision each connect mode ends up speaking with the bridge.
PROTOCOL_VERSION: dict[Mode, str] = {"legacy": "2025-11-25", "auto": "2026-07-28"}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"

pytestmark = pytest.mark.parametrize("mode", ["legacy", "auto"])


@asynccontextmanager
async def mcp_client(bridge: Bridge, role: str, mode: Mode) -> AsyncIterator[Client]:
    """An SDK client connected to the bridge's /mcp with `role`'s agent key, speaking the
    revision `mode` stands for (so no test silently runs in the other era)."""
    url = str(bridge.session._base_url) + "/mcp"
    headers = {"Authorization": f"Bearer {bridge.keys[role]}"}
    async with (
        httpx2.AsyncClient(headers=headers) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        assert client.protocol_version == PROTOCOL_VERSION[mode]
        yield client


def text_json(result: CallToolResult) -> Any:
    """The JSON the (single) text content block carries."""
    assert len(result.content) == 1
    block = result.content[0]
    assert isinstance(block, TextContent)
    return orjson.loads(block.text)


def tool_error(result: CallToolResult) -> dict[str, Any]:
    """The error of a failed call, as the model reads it in the text block."""
    assert result.is_error is True
    assert result.structured_content is None
    body = text_json(result)
    assert body["ok"] is False
    error: dict[str, Any] = body["error"]
    return error


def succeeded(result: CallToolResult) -> dict[str, Any]:
    """The structured result of a successful call, checked against its text twin."""
    assert result.is_error is False, text_json(result)
    assert result.structured_content is not None
    structured: dict[str, Any] = result.structured_content
    assert text_json(result) == structured
    return structured


async def test_the_client_negotiates_the_revision_its_mode_asks_for(
    bridge: Bridge, mode: Mode
) -> None:
    async with mcp_client(bridge, "supervisor", mode) as client:
        assert client.protocol_version == PROTOCOL_VERSION[mode]
        assert client.server_capabilities.tools is not None
        assert client.server_info is not None
        assert client.server_info.name == "dispatch-bridge"


async def test_each_role_lists_its_catalog_tools_in_order_with_schemas_and_annotations(
    bridge: Bridge, mode: Mode
) -> None:
    for role, (_, agent_role) in AGENTS.items():
        # 2025-11-25 marks the tools whose calls a person may have to approve (MCP Tasks).
        expected = [
            {**mcp_tool(t), "execution": {"taskSupport": "optional"}}
            if mode == "legacy" and t.may_need_approval
            else mcp_tool(t)
            for t in catalog()
            if t.allowed(agent_role)
        ]
        async with mcp_client(bridge, role, mode) as client:
            listed = await client.list_tools()

        assert [t.name for t in listed.tools] == [t["name"] for t in expected], role
        for tool, want in zip(listed.tools, expected, strict=True):
            assert tool.title
            assert tool.description
            assert tool.input_schema["type"] == "object"
            assert tool.output_schema is not None
            assert tool.annotations is not None
            assert tool.model_dump(mode="json", by_alias=True, exclude_none=True) == want
    assert bridge.proxy.requests == 0


async def test_a_technician_neither_sees_nor_can_call_ticket_cancel(
    bridge: Bridge, mode: Mode
) -> None:
    async with mcp_client(bridge, "technician", mode) as client:
        names = [t.name for t in (await client.list_tools()).tools]
        result = await client.call_tool(
            "ticket_cancel",
            {"ticket_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "reason": "no longer needed"},
        )

    assert "ticket_cancel" not in names
    assert "tech_complete" in names
    error = tool_error(result)
    assert error["code"] == "forbidden"
    assert error["details"] == {
        "role": "technician",
        "allowed_roles": ["dispatcher", "supervisor"],
        "outcome": "none",
    }
    assert bridge.proxy.requests == 0


async def test_rb2_completion_over_mcp_is_refused_until_the_evidence_is_attached(
    bridge: Bridge, mode: Mode
) -> None:
    async with (
        mcp_client(bridge, "supervisor", mode) as supervisor,
        mcp_client(bridge, "technician", mode) as technician,
    ):
        created = succeeded(await supervisor.call_tool("ticket_create", COMPLETE_TICKET))
        tid: str = created["ticket"]["id"]
        succeeded(await supervisor.call_tool("ticket_schedule", {"ticket_id": tid, **WINDOW}))
        succeeded(await supervisor.call_tool("ticket_dispatch", {"ticket_id": tid}))
        succeeded(await technician.call_tool("tech_arrive", {"ticket_id": tid}))

        refused = await technician.call_tool("tech_complete", {"ticket_id": tid})

        error = tool_error(refused)
        assert error["code"] == "evidence_missing"
        assert "photo:before, photo:after, signature:customer" in error["message"]
        assert error["retryable"] is False
        assert [(m["kind"], m["tag"]) for m in error["details"]["missing_evidence"]] == [
            ("photo", "before"),
            ("photo", "after"),
            ("signature", "customer"),
        ]
        for kind, tag in (("photo", "before"), ("photo", "after"), ("signature", "customer")):
            attached = await technician.call_tool(
                "evidence_attach",
                {
                    "ticket_id": tid,
                    "kind": kind,
                    "tag": tag,
                    "content_type": "image/png",
                    "content_base64": "aGVsbG8=",
                },
            )
            succeeded(attached)
        done = succeeded(await technician.call_tool("tech_complete", {"ticket_id": tid}))

    assert done["ticket"]["state"] == "COMPLETED"
    events = await bridge.api.timeline(tid)
    attempts = [e for e in events if e["type"] in ("completion_rejected", "completed")]
    assert [
        (e["type"], e["actor_type"], e["actor_id"], e["role"], e["tool_name"]) for e in attempts
    ] == [
        ("completion_rejected", "agent", "tech-1", "technician", "tech.complete"),
        ("completed", "agent", "tech-1", "technician", "tech.complete"),
    ]
    assert [e["request_id"] for e in attempts] == [
        text_json(refused)["request_id"],
        done["event"]["request_id"],
    ]
    assert attempts[0]["request_id"] != attempts[1]["request_id"]


async def test_invalid_arguments_are_a_tool_error_with_paths_and_reach_nothing(
    bridge: Bridge, mode: Mode
) -> None:
    async with mcp_client(bridge, "supervisor", mode) as client:
        result = await client.call_tool(
            "ticket_create", {**COMPLETE_TICKET, "priority": "P9", "colour": "red"}
        )

    error = tool_error(result)
    assert error["code"] == "invalid_arguments"
    paths = {e["path"] for e in error["details"]["errors"]}
    assert {"/priority", "/colour"} <= paths
    assert bridge.proxy.requests == 0


async def test_a_traceparent_in_meta_reaches_the_timeline(bridge: Bridge, mode: Mode) -> None:
    # The SDK opens a client span per request and injects *its* context into `_meta`
    # (SEP-414), overwriting a caller's traceparent whenever an OTel SDK is configured (as in
    # this process). An agent with a trace of its own therefore makes it current, and the SDK
    # carries it on in `_meta`. No HTTP traceparent header is sent: only `_meta` can carry it.
    remote = SpanContext(
        int(TRACE_ID, 16), 0x00F067AA0BA902B7, is_remote=True, trace_flags=TraceFlags(1)
    )
    # RequestParamsMeta is an open TypedDict (PEP 728 extra_items), which mypy cannot read yet.
    meta = cast(RequestParamsMeta, {"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"})
    async with mcp_client(bridge, "supervisor", mode) as client:
        with trace.use_span(NonRecordingSpan(remote)):
            result = await client.call_tool("ticket_create", COMPLETE_TICKET, meta=meta)

    created = succeeded(result)
    assert created["event"]["trace_id"] == TRACE_ID
    events = await bridge.api.timeline(created["ticket"]["id"])
    assert [(e["type"], e["trace_id"]) for e in events] == [("created", TRACE_ID)]


async def test_an_unknown_tool_is_a_jsonrpc_invalid_params_error_not_a_tool_result(
    bridge: Bridge, mode: Mode
) -> None:
    async with mcp_client(bridge, "technician", mode) as client:
        with pytest.raises(MCPError) as raised:
            await client.call_tool("ticket_teleport", {})

    assert raised.value.code == -32602
    assert "ticket_teleport" in raised.value.message
    assert "tech_complete" in raised.value.data["available"]  # the names tools/list gives
    assert "ticket_cancel" not in raised.value.data["available"]
    assert bridge.proxy.requests == 0


async def test_a_call_answered_by_its_first_try_is_one_request_line_with_its_attempt(
    bridge: Bridge, mode: Mode, log_lines: list[bytes]
) -> None:
    async with mcp_client(bridge, "supervisor", mode) as client:
        log_lines.clear()
        succeeded(await client.call_tool("ticket_create", COMPLETE_TICKET))

    lines = [orjson.loads(line) for line in log_lines]
    bridge_lines = [line for line in lines if line["service"] == "bridge"]
    (call,) = [line for line in bridge_lines if line.get("tool_name") == "ticket.create"]
    assert call["event"] == "http_request"
    assert call["endpoint"] == "/mcp"
    (served,) = [line for line in lines if line["endpoint"] == "/v1/tickets"]
    assert call["request_id"] == served["request_id"]  # the try's request_id, dispatch-api's
    assert call["attempt"] == 1
    assert 0 < call["upstream_latency_ms"] <= call["latency_ms"]
    assert not [line for line in bridge_lines if line["event"] == "upstream_attempt"]
