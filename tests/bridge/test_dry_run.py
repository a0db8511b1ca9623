"""Dry runs through the bridge: REST `"dry_run": true` and MCP `_meta` (the official client)
are validated and authorized like the real call, answer what dispatch-api says the call
would do, change nothing, leave no key behind, and are counted apart."""

from __future__ import annotations

from typing import Any, cast

import orjson
import pytest
from mcp.types import RequestParamsMeta
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from testkit.api import WINDOW, Api, Reply, parsed_logs

from .conftest import Bridge
from .test_mcp_client import Mode, mcp_client, succeeded, tool_error
from .test_metrics import by_labels, scrape

META_DRY_RUN = "dispatch-bridge.dev/dryRun"
TABLES = ("tickets", "timeline_events", "idempotency_keys", "evidence")


async def counts(api: Api) -> dict[str, int]:
    return {t: await api.count(f"SELECT count(*) FROM {t}") for t in TABLES}


async def dry_invoke(
    bridge: Bridge, tool: str, arguments: Any, *, as_: str = "supervisor", **extra: Any
) -> Reply:
    body = {"arguments": arguments, "dry_run": True, **extra}
    return await bridge.request("POST", f"/v1/tools/{tool}/invoke", json=body, as_=as_)


async def on_site(api: Api) -> str:
    tid: str = (await api.create_ticket())["id"]
    for action, body in (("schedule", WINDOW), ("dispatch", None), ("arrive", None)):
        assert (await api.act(tid, action, body)).status == 200
    return tid


async def test_a_tech_complete_dry_run_says_which_evidence_is_missing_and_changes_nothing(
    bridge: Bridge,
) -> None:
    tid = await on_site(bridge.api)
    before = await counts(bridge.api)
    reply = await dry_invoke(bridge, "tech.complete", {"ticket_id": tid}, as_="technician")
    assert reply.status == 200, reply.body
    assert reply.body["ok"] is True
    assert reply.body["dry_run"] is True
    assert reply.body["tool"] == "tech.complete"
    result = reply.body["result"]
    assert (result["accepted"], result["event_type"]) == (False, "completion_rejected")
    assert result["problem"]["code"] == "evidence_missing"
    assert [(m["kind"], m["tag"]) for m in result["problem"]["missing_evidence"]] == [
        ("photo", "before"),
        ("photo", "after"),
        ("signature", "customer"),
    ]
    assert await counts(bridge.api) == before


async def test_a_schedule_dry_run_into_a_booked_window_answers_the_conflict(
    bridge: Bridge,
) -> None:
    first, second = await bridge.api.create_ticket(), await bridge.api.create_ticket()
    assert (await bridge.api.act(first["id"], "schedule", WINDOW)).status == 200
    before = await counts(bridge.api)
    reply = await dry_invoke(bridge, "ticket.schedule", {"ticket_id": second["id"], **WINDOW})
    assert reply.status == 200, reply.body
    problem = reply.body["result"]["problem"]
    assert reply.body["result"]["accepted"] is False
    assert problem["code"] == "schedule_conflict"
    assert problem["conflict"]["ticket_id"] == first["id"]
    assert problem["candidates"] == ["tech-2"]
    assert await counts(bridge.api) == before


async def test_an_accepted_dry_run_then_the_real_call_with_the_same_tool_call_id_runs_once(
    bridge: Bridge,
) -> None:
    tid = (await bridge.api.create_ticket())["id"]
    args = {"ticket_id": tid, **WINDOW}
    before = await counts(bridge.api)
    rehearsed = await dry_invoke(bridge, "ticket.schedule", args, tool_call_id="plan-1")
    assert rehearsed.status == 200, rehearsed.body
    result = rehearsed.body["result"]
    assert result["dry_run"] is True
    assert result["accepted"] is True
    assert result["transition"] == {"from": "READY_TO_SCHEDULE", "to": "SCHEDULED"}
    assert result["ticket"]["assignment"]["technician_id"] == "tech-1"
    assert set(result["sla"]) == {"before", "after", "changed"}
    assert result["approval"] is None
    assert rehearsed.body["replayed"] is False
    assert await counts(bridge.api) == before

    real = await bridge.invoke("ticket.schedule", args, tool_call_id="plan-1")
    assert real.status == 200, real.body
    assert "dry_run" not in real.body
    assert real.body["replayed"] is False  # the dry run left no key to replay
    assert real.body["request_id"] == rehearsed.body["request_id"]
    assert [e["type"] for e in await bridge.api.timeline(tid)] == ["created", "scheduled"]


async def test_a_technician_dry_running_ticket_cancel_is_forbidden_and_never_asks(
    bridge: Bridge,
) -> None:
    tid = (await bridge.api.create_ticket())["id"]
    asked = bridge.proxy.requests
    reply = await dry_invoke(
        bridge, "ticket.cancel", {"ticket_id": tid, "reason": "no"}, as_="technician"
    )
    assert reply.status == 403
    assert (reply.body["ok"], reply.body["dry_run"]) == (False, True)
    assert reply.body["error"]["code"] == "forbidden"
    assert bridge.proxy.requests == asked


@pytest.mark.parametrize("flag", ["yes", 1, 0, [], {"x": True}, "true"])
async def test_a_dry_run_flag_that_is_not_a_boolean_is_a_precise_400_and_nothing_is_done(
    bridge: Bridge, flag: Any
) -> None:
    tid = (await bridge.api.create_ticket())["id"]
    before, asked = await counts(bridge.api), bridge.proxy.requests
    body = {"arguments": {"ticket_id": tid, "reason": "x"}, "dry_run": flag}
    reply = await bridge.request("POST", "/v1/tools/ticket.cancel/invoke", json=body)
    assert reply.status == 400
    assert reply.body["error"]["code"] == "invalid_arguments"
    assert reply.body["error"]["details"]["errors"][0]["path"] == "/dry_run"
    assert len(reply.raw) < 2000
    assert await counts(bridge.api) == before
    assert bridge.proxy.requests == asked


async def test_a_dry_run_counts_in_tool_dry_runs_total_and_not_in_tool_invocations(
    bridge: Bridge,
) -> None:
    tid = (await bridge.api.create_ticket())["id"]
    before, _ = await scrape(bridge)
    await dry_invoke(bridge, "ticket.schedule", {"ticket_id": tid, **WINDOW})
    await dry_invoke(bridge, "ticket.get", {"ticket_id": tid})
    after, _ = await scrape(bridge)
    assert by_labels(after, "tool_invocations_total", "tool", "code") == by_labels(
        before, "tool_invocations_total", "tool", "code"
    )
    dry_runs = by_labels(after, "tool_dry_runs_total", "tool", "outcome")
    assert dry_runs == {("ticket.schedule", "accepted"): 1.0, ("ticket.get", "ok"): 1.0}


async def test_a_read_only_tool_answers_a_dry_run_as_usual(bridge: Bridge) -> None:
    ticket = await bridge.api.create_ticket()
    reply = await dry_invoke(bridge, "ticket.get", {"ticket_id": ticket["id"]})
    assert reply.status == 200, reply.body
    assert reply.body["dry_run"] is True
    assert reply.body["result"]["ticket"]["id"] == ticket["id"]


async def test_logs_of_both_services_and_the_tool_span_say_a_call_was_a_dry_run(
    bridge: Bridge, log_lines: list[bytes], spans: InMemorySpanExporter
) -> None:
    tid = (await bridge.api.create_ticket())["id"]
    log_lines.clear()
    spans.clear()
    await dry_invoke(bridge, "ticket.hold", {"ticket_id": tid, "cause": "customer", "reason": "x"})
    requests = [line for line in parsed_logs(log_lines) if line["event"] == "http_request"]
    assert sorted((line["service"], line.get("dry_run")) for line in requests) == [
        ("bridge", True),
        ("dispatch-api", True),
    ]
    tool_spans = [s for s in spans.get_finished_spans() if s.name == "execute_tool ticket.hold"]
    assert [dict(s.attributes or {}).get("dispatch_bridge.dry_run") for s in tool_spans] == [True]


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_an_mcp_dry_run_answers_structured_content_marked_dry_and_changes_nothing(
    bridge: Bridge, mode: Mode
) -> None:
    tid = (await bridge.api.create_ticket())["id"]
    before = await counts(bridge.api)
    meta = cast(RequestParamsMeta, {META_DRY_RUN: True})
    async with mcp_client(bridge, "dispatcher", mode) as client:
        result = await client.call_tool("ticket_schedule", {"ticket_id": tid, **WINDOW}, meta=meta)
        wrong = cast(RequestParamsMeta, {META_DRY_RUN: "yes"})
        refused = await client.call_tool(
            "ticket_cancel", {"ticket_id": tid, "reason": "x"}, meta=wrong
        )
    structured = succeeded(result)
    assert structured["dry_run"] is True
    assert structured["transition"] == {"from": "READY_TO_SCHEDULE", "to": "SCHEDULED"}
    assert result.meta == {META_DRY_RUN: True}
    error = tool_error(refused)
    assert error["code"] == "invalid_arguments"
    assert "dryRun" in orjson.dumps(error).decode()
    assert await counts(bridge.api) == before
