"""A held call that a person approves but the domain refuses when it runs (here
ticket.schedule into a window another ticket took meanwhile) is recorded `approved` with that
refusal: the agent reads the same refusal, replayed, over REST and as its task's result."""

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
    rules = [{"name": "schedule", "tool": "ticket.schedule", "approvers": ["supervisor"]}]
    return replace(api_settings, approvals=parse_policy({"rules": rules}))


async def test_an_approved_call_the_domain_refuses_reads_as_that_refusal_replayed(
    bridge: Bridge,
) -> None:
    tid, other = await ticket(bridge.api), await ticket(bridge.api)
    args: dict[str, Any] = {"ticket_id": tid, **WINDOW}
    held = await bridge.invoke("ticket.schedule", args, as_="dispatcher", tool_call_id="book-1")
    assert held.status == 202, held.body
    approval_id = held.body["error"]["details"]["approval_id"]
    booked = await bridge.api.act(other, "schedule", WINDOW, as_="dispatcher")  # meanwhile
    assert booked.status == 200, booked.body
    async with sdk(bridge, "dispatcher", "auto", tasks=True) as client:
        decided = await decide(bridge.api, approval_id, "approve")
        task = await task_request(client, "tasks/get", approval_id)

    resent = await bridge.invoke("ticket.schedule", args, as_="dispatcher", tool_call_id="book-1")

    assert decided["status"] == "approved"
    assert resent.status == 409
    assert resent.body["replayed"] is True
    assert resent.body["error"]["code"] == "invalid_transition"
    assert resent.body["error"]["details"]["conflict"]["ticket_id"] == other
    assert task["status"] == "completed"
    assert task["result"]["isError"] is True
    assert task["result"]["_meta"] == {"dispatch-bridge.dev/replayed": True}
    from_task = orjson.loads(task["result"]["content"][0]["text"])["error"]
    assert from_task["code"] == "invalid_transition"
    assert from_task["message"] == resent.body["error"]["message"]
    assert await ticket_state(bridge.api, tid) == "READY_TO_SCHEDULE"
