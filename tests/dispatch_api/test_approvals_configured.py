"""A configured `[approvals]` policy is the one dispatch-api runs: its rules gate what they
name, an `allow` rule exempts, and a call refused by the domain when approved is recorded
`approved` with its refusal, which the re-send replays."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from dispatch_api.domain import parse_policy
from dispatch_api.settings import ApiSettings
from testkit.api import Api, window
from testkit.approvals import AgentCall, cancel_call, decide, event_types, statuses


@pytest.fixture
def api_settings(api_settings: ApiSettings) -> ApiSettings:
    policy = parse_policy(
        {
            "rules": [
                {
                    "name": "p4-free",
                    "tool": "ticket.cancel",
                    "decision": "allow",
                    "when": {"priority": ["P4"]},
                },
                {"name": "cancel", "tool": "ticket.cancel"},
                {"name": "schedule", "tool": "ticket.schedule", "approvers": ["dispatcher"]},
            ]
        }
    )
    return replace(api_settings, approvals=policy)


async def test_an_allow_rule_lets_its_calls_through_and_the_broader_rule_gates_the_rest(
    api: Api,
) -> None:
    p4 = await api.create_ticket(priority="P4")
    p2 = await api.create_ticket(priority="P2")

    free = await cancel_call(api, p4["id"]).send()
    gated = await cancel_call(api, p2["id"]).send()

    assert free.status == 200, free.body
    assert free.body["ticket"]["state"] == "CANCELLED"
    assert gated.status == 202
    assert gated.body["approval"]["rule"] == "cancel"
    assert await statuses(api) == ["pending"]


async def test_an_approved_call_the_domain_refuses_is_approved_and_its_refusal_replayed(
    api: Api,
) -> None:
    wanted = await api.create_ticket()
    other = await api.create_ticket()
    body = window(0)
    call = AgentCall(api, wanted["id"], "schedule", "ticket.schedule", body, str(uuid.uuid4()))
    approval_id = (await call.send()).body["approval"]["id"]
    # Meanwhile a person books the technician for the same window on another ticket.
    booked = await api.act(other["id"], "schedule", body, as_="dispatcher")
    assert booked.status == 200, booked.body

    approved = await decide(api, approval_id, "approve", as_="dispatcher")
    resent = await call.send()

    assert approved.status == 200, approved.body
    view = approved.body["approval"]
    assert view["status"] == "approved"
    assert view["result"]["status"] == 409
    assert view["result"]["body"]["code"] == "schedule_conflict"
    assert resent.status == 409
    assert resent.headers["Idempotent-Replayed"] == "true"
    assert resent.body["code"] == "schedule_conflict"
    assert await event_types(api, wanted["id"]) == [
        "created",
        "approval_requested",
        "approval_granted",
        "action_rejected",
    ]
    assert (await api.request("GET", f"/v1/tickets/{wanted['id']}")).body["state"] == (
        "READY_TO_SCHEDULE"
    )
