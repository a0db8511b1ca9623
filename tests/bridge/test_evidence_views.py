"""Tools that answer ticket views stay bounded and valid however much evidence a ticket holds,
and an attach past the per-ticket limit is an error the model can act on."""

from __future__ import annotations

import orjson
import pytest

from dispatch_api.settings import ApiSettings
from schemas import Validator
from testkit.api import Api

from .conftest import OUTPUT_SCHEMAS, Bridge

MCP_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2025-11-25",
}


@pytest.fixture
def api_settings() -> ApiSettings:
    return ApiSettings(db_pool_min=1, db_pool_max=8, max_evidence_per_ticket=1000)


async def test_ticket_get_on_a_ticket_with_many_items_is_bounded_and_conforms_over_rest_and_mcp(
    bridge: Bridge, api: Api
) -> None:
    ticket = await api.create_ticket()
    ids = await api.insert_evidence(ticket["id"], 1000)
    call = {"name": "ticket.get", "arguments": {"ticket_id": ticket["id"]}}
    rpc = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": call}

    rest = await bridge.invoke("ticket.get", {"ticket_id": ticket["id"]})  # checks the schema
    mcp = await bridge.request("POST", "/mcp", data=orjson.dumps(rpc), headers=MCP_HEADERS)
    queue = await bridge.invoke("queue.view", {"limit": 50})

    assert rest.status == 200, rest.body
    assert len(rest.raw) < 30_000
    view = rest.body["result"]["ticket"]
    assert [e["id"] for e in view["evidence"]] == ids[-20:]
    assert view["evidence_summary"]["total"] == 1000
    result = mcp.body["result"]
    assert result["isError"] is False
    assert len(mcp.raw) < 60_000  # structuredContent and its text copy
    Validator(OUTPUT_SCHEMAS["ticket.get"]).validate(result["structuredContent"])
    assert result["structuredContent"]["ticket"]["evidence_summary"]["total"] == 1000
    assert queue.status == 200, queue.body
    assert len(queue.raw) < 30_000


async def test_an_attach_past_the_limit_tells_the_model_not_to_retry(
    bridge: Bridge, api: Api
) -> None:
    ticket = await api.create_ticket()
    await api.insert_evidence(ticket["id"], 1000)
    attach = {
        "ticket_id": ticket["id"],
        "kind": "photo",
        "tag": "before",
        "content_type": "image/jpeg",
        "content_base64": "aGk=",
    }

    reply = await bridge.invoke("evidence.attach", attach)

    assert reply.status == 409, reply.body
    error = reply.body["error"]
    assert error["code"] == "invalid_transition"
    assert error["retryable"] is False
    assert error["details"]["upstream_code"] == "evidence_limit_reached"
    assert (error["details"]["limit"], error["details"]["count"]) == (1000, 1000)
    assert "1000" in error["message"]
    assert "nothing was attached" in error["message"]
    assert await api.count("SELECT count(*) FROM evidence") == 1000
