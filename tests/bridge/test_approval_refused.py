"""A held call that a person approves but the domain refuses when it runs (here tech.complete
without its evidence) is recorded `approved` with that refusal: the agent reads the same
refusal, replayed, over REST, as a re-sent MCP call and as its task's result."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest

from dispatch_api.domain import parse_policy
from dispatch_api.settings import ApiSettings
from testkit.api import WINDOW

from ._approval_steps import decide, ticket, ticket_state
from .conftest import Bridge
from .test_approval_tasks import sdk, task_request


@pytest.fixture
def api_settings(api_settings: ApiSettings) -> ApiSettings:
    rules = [{"name": "complete", "tool": "tech.complete", "approvers": ["supervisor"]}]
    return replace(api_settings, approvals=parse_policy({"rules": rules}))


async def _on_site(bridge: Bridge) -> str:
    tid = await ticket(bridge.api)
    for action, body in (("schedule", WINDOW), ("dispatch", {}), ("arrive", {})):
        reply = await bridge.api.act(tid, action, body)
        assert reply.status == 200, reply.body
    return tid


async def test_an_approved_call_the_domain_refuses_reads_as_that_refusal_replayed(
    bridge: Bridge,
) -> None:
    tid = await _on_site(bridge)
    args: dict[str, Any] = {"ticket_id": tid}
    held = await bridge.invoke("tech.complete", args, as_="technician", tool_call_id="done-1")
    assert held.status == 202, held.body
    approval_id = held.body["error"]["details"]["approval_id"]
    async with sdk(bridge, "technician", "auto", tasks=True) as client:
        decided = await decide(bridge.api, approval_id, "approve")
        task = await task_request(client, "tasks/get", approval_id)

    resent = await bridge.invoke("tech.complete", args, as_="technician", tool_call_id="done-1")

    assert decided["status"] == "approved"
    assert resent.status == 422
    assert resent.body["replayed"] is True
    assert resent.body["error"]["code"] == "evidence_missing"
    assert task["status"] == "completed"
    assert task["result"]["isError"] is True
    assert task["result"]["_meta"] == {"dispatch-bridge.dev/replayed": True}
    from_task = orjson.loads(task["result"]["content"][0]["text"])["error"]
    assert from_task["code"] == "evidence_missing"
    assert from_task["message"] == resent.body["error"]["message"]
    assert await ticket_state(bridge.api, tid) == "ON_SITE"
