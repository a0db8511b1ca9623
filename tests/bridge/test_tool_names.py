"""Tool names every model accepts, end to end: MCP lists safe names (`tech_complete`) with the
canonical dotted name in `title`; `mcp_tool_names = "dotted"` lists dotted ones; calls take
either spelling; logs, metric labels, spans and the timeline always say the dotted name."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bridge.settings import load_bridge_settings
from settings import SettingsError
from testkit.api import COMPLETE_TICKET, parsed_logs
from tools import SAFE_NAME, catalog

from .conftest import Bridge
from .test_metrics import by_labels, scrape

MCP_HEADERS = {"Content-Type": "application/json", "MCP-Protocol-Version": "2025-11-25"}
SUPERVISOR = [t for t in catalog() if t.allowed("supervisor")]
DOTTED = {"mcp_tool_names": "dotted"}


async def mcp(bridge: Bridge, method: str, params: dict[str, Any]) -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "id": 7, "method": method, "params": params}
    reply = await bridge.request(
        "POST", "/mcp", data=json.dumps(body).encode(), headers=MCP_HEADERS
    )
    assert reply.status == 200, reply.raw
    result: dict[str, Any] = reply.body["result"]
    return result


async def listings(bridge: Bridge) -> dict[str, list[dict[str, Any]]]:
    """What each listing shows the supervisor: MCP tools/list and GET /v1/tools per format."""
    shown = {"tools/list": (await mcp(bridge, "tools/list", {}))["tools"]}
    for fmt in ("mcp", "openai", "anthropic"):
        reply = await bridge.request("GET", f"/v1/tools?format={fmt}")
        assert reply.status == 200, reply.body
        shown[fmt] = reply.body["tools"]
    return shown


def names(tools: list[dict[str, Any]]) -> list[str]:
    return [t["function"]["name"] if "function" in t else t["name"] for t in tools]


async def test_every_listing_names_tools_as_openai_and_anthropic_accept_them_by_default(
    bridge: Bridge,
) -> None:
    shown = await listings(bridge)

    for where, tools in shown.items():
        assert names(tools) == [t.alias for t in SUPERVISOR], where
        assert [n for n in names(tools) if not SAFE_NAME.fullmatch(n)] == [], where
    for where in ("tools/list", "mcp"):
        assert [t["title"] for t in shown[where]] == [t.name for t in SUPERVISOR]
        assert [t["annotations"]["title"] for t in shown[where]] == [t.title for t in SUPERVISOR]


@pytest.mark.parametrize("bridge_overrides", [DOTTED])
async def test_dotted_mcp_names_list_dotted_on_mcp_while_openai_and_anthropic_stay_safe(
    bridge: Bridge,
) -> None:
    shown = await listings(bridge)

    assert names(shown["tools/list"]) == names(shown["mcp"]) == [t.name for t in SUPERVISOR]
    assert names(shown["openai"]) == names(shown["anthropic"]) == [t.alias for t in SUPERVISOR]
    called = await mcp(bridge, "tools/call", {"name": "sla_status", "arguments": {}})
    assert called["isError"] is False  # the safe spelling is still taken


async def test_a_call_by_the_safe_name_is_logged_counted_and_stored_under_the_dotted_name(
    bridge: Bridge, log_lines: list[bytes], spans: InMemorySpanExporter
) -> None:
    spans.clear()
    over_mcp = await mcp(
        bridge, "tools/call", {"name": "ticket_create", "arguments": COMPLETE_TICKET}
    )
    over_rest = await bridge.invoke("ticket_create", COMPLETE_TICKET)

    assert over_mcp["isError"] is False, over_mcp
    assert over_rest.status == 200, over_rest.body
    assert over_rest.body["tool"] == "ticket.create"
    for ticket in (over_mcp["structuredContent"]["ticket"], over_rest.body["result"]["ticket"]):
        [event] = await bridge.api.timeline(ticket["id"])
        assert event["tool_name"] == "ticket.create"
    lines = [
        line
        for line in parsed_logs(log_lines)
        if line["service"] == "bridge" and line["event"] == "http_request"
        if line["endpoint"] in ("/mcp", "/v1/tools/{name}/invoke")
    ]
    assert [line["tool_name"] for line in lines] == ["ticket.create", "ticket.create"]
    series, _ = await scrape(bridge)
    counted = by_labels(series, "tool_invocations_total", "tool", "code")
    assert counted == {("ticket.create", "ok"): 2.0}
    named = [
        (span.name, (span.attributes or {}).get("gen_ai.tool.name"))
        for span in spans.get_finished_spans()
        if span.name.startswith(("tools/call", "execute_tool"))
    ]
    assert sorted(named) == [
        ("execute_tool ticket.create", "ticket.create"),
        ("execute_tool ticket.create", "ticket.create"),
        ("tools/call ticket.create", "ticket.create"),
    ]


def test_mcp_tool_names_are_read_from_the_environment_and_toml(tmp_path: Any) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text('[bridge]\nmcp_tool_names = "dotted"\n')

    assert load_bridge_settings({}).mcp_tool_names == "safe"
    assert load_bridge_settings({}, config).listed_names == "dotted"
    assert load_bridge_settings({"DISPATCH_MCP_TOOL_NAMES": "safe"}, config).listed_names == "safe"


def test_an_unknown_mcp_tool_names_value_stops_start_up() -> None:
    with pytest.raises(SettingsError, match="DISPATCH_MCP_TOOL_NAMES: must be one of safe, dotted"):
        load_bridge_settings({"DISPATCH_MCP_TOOL_NAMES": "camel"})
