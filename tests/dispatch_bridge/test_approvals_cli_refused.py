"""`dispatch-bridge approve` of a call the domain refuses when it runs: the operator is told
it was approved yet changed nothing, and why."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from dispatch_api.domain import parse_policy
from dispatch_api.settings import ApiSettings
from testkit.api import window
from testkit.approvals import AgentCall

from .conftest import Bridge
from .test_approvals_cli import _cli


@pytest.fixture
def api_settings(api_settings: ApiSettings) -> ApiSettings:
    rule = {"name": "schedule", "tool": "ticket.schedule", "approvers": ["supervisor"]}
    return replace(api_settings, approvals=parse_policy({"rules": [rule]}))


async def test_approving_a_call_the_domain_then_refuses_says_nothing_changed_and_why(
    bridge: Bridge, tmp_path: Path
) -> None:
    api = bridge.api
    wanted, other = await api.create_ticket(), await api.create_ticket()
    body = window(0)
    call = AgentCall(api, wanted["id"], "schedule", "ticket.schedule", body, str(uuid.uuid4()))
    approval = (await call.send()).body["approval"]
    booked = await api.act(other["id"], "schedule", body, as_="dispatcher")  # meanwhile

    approved = await _cli(bridge, tmp_path, "approve", approval["id"])
    ticket = await api.request("GET", f"/v1/tickets/{wanted['id']}")

    assert booked.status == 200, booked.body
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout == (
        f"approved: ticket.schedule on ticket {wanted['id']} was refused when run"
        " (HTTP 409 schedule_conflict): no change\n"
    )
    assert ticket.body["state"] == "READY_TO_SCHEDULE"
