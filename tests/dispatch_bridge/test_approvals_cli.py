"""`dispatch-bridge approvals | approve | deny`, the real command against a real dispatch-api.

Gated calls are made as the bridge makes them: the gateway principal asserting an agent
actor and the tool (X-Actor-*, X-Tool-Name), its request id as the Idempotency-Key.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dispatch_bridge._approvals_cli import approvals
from testkit.api import COMPLETE_TICKET, FakeClock, Reply

from .conftest import Bridge, operator_endpoints

CLI = Path(sys.executable).with_name("dispatch-bridge")
AGENT = {"X-Actor-Type": "agent", "X-Actor-Id": "agent-disp", "X-Actor-Role": "dispatcher"}


@pytest.fixture
def clock() -> FakeClock:
    """The wall clock to start with: the command tells ages and expiries from its own."""
    return FakeClock(datetime.now(UTC).replace(microsecond=0))


async def _ticket(bridge: Bridge) -> str:
    created = await bridge.api.request("POST", "/v1/tickets", json=COMPLETE_TICKET)
    assert created.status == 201, created.body
    tid: str = created.body["ticket"]["id"]
    return tid


async def _ask_to_cancel(
    bridge: Bridge, tid: str, key: str, reason: str = "customer fixed it", **actor: str
) -> Reply:
    """The agent's ticket.cancel as the bridge sends it (the same key on a re-send)."""
    headers = {**AGENT, **actor, "X-Tool-Name": "ticket.cancel", "X-Request-ID": key}
    return await bridge.api.request(
        "POST",
        f"/v1/tickets/{tid}/cancel",
        json={"reason": reason},
        as_="gateway",
        key=key,
        headers=headers,
    )


async def _cli(bridge: Bridge, tmp_path: Path, *args: str, as_: str = "supervisor") -> Any:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")},
        "DISPATCH_DATA_DIR": str(tmp_path),
        "DISPATCH_API_URL": operator_endpoints(bridge).api_url,
        "DISPATCH_API_TOKEN": bridge.api.tokens[as_],
    }
    return await asyncio.to_thread(
        subprocess.run, [str(CLI), *args], env=env, capture_output=True, text=True
    )


async def test_approvals_lists_what_agents_wait_for_oldest_first(
    bridge: Bridge, clock: FakeClock, tmp_path: Path
) -> None:
    first, second = await _ticket(bridge), await _ticket(bridge)
    asked = await _ask_to_cancel(bridge, first, str(uuid.uuid4()), reason="duplicate job")
    clock.advance(seconds=1)
    await _ask_to_cancel(bridge, second, str(uuid.uuid4()))

    listed = await _cli(bridge, tmp_path, "approvals")
    as_json = await _cli(bridge, tmp_path, "approvals", "--json")
    none_denied = await _cli(bridge, tmp_path, "approvals", "--status", "denied")

    assert asked.status == 202, asked.body
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert re.split(r"\s{2,}", header) == [
        "approval",
        "status",
        "ticket",
        "tool",
        "arguments",
        "requested by",
        "age",
        "expires in",
        "approvers",
        "decided by",
    ]
    cells = [re.split(r"\s{2,}", row) for row in rows]
    assert [c[2] for c in cells] == [first, second]
    assert cells[0][0] == asked.body["approval"]["id"]
    assert cells[0][1:2] + cells[0][3:6] == [
        "pending",
        "ticket.cancel",
        'reason="duplicate job"',
        "agent:agent-disp (dispatcher)",
    ]
    assert re.fullmatch(r"0m0\ds", cells[0][6]), cells[0]
    assert re.fullmatch(r"(59m\d\ds|1h00m)", cells[0][7]), cells[0]  # the rule's 60 minutes
    assert cells[0][8:] == ["supervisor,dispatcher", "-"]
    assert [a["ticket_id"] for a in json.loads(as_json.stdout)] == [first, second]
    assert (none_denied.returncode, none_denied.stdout) == (0, "no denied approvals\n")


async def test_approve_runs_the_call_once_and_the_agent_re_send_gets_its_result(
    bridge: Bridge, tmp_path: Path
) -> None:
    tid = await _ticket(bridge)
    key = str(uuid.uuid4())
    approval = (await _ask_to_cancel(bridge, tid, key)).body["approval"]

    approved = await _cli(
        bridge, tmp_path, "approve", approval["id"], "--reason", "customer confirmed"
    )
    again = await _cli(bridge, tmp_path, "approve", approval["id"], as_="dispatcher")
    resent = await _ask_to_cancel(bridge, tid, key)
    story = await bridge.api.timeline(tid)

    assert approved.returncode == 0, approved.stderr
    assert approved.stdout == (
        f"executed: ticket.cancel on ticket {tid} ran (HTTP 200, ticket now CANCELLED);"
        " the agent's re-send gets it\n"
    )
    assert again.returncode == 5
    assert again.stderr.startswith(
        "dispatch-bridge approve: 409 approval_decided: already executed by sup-1 (supervisor)"
    )
    assert again.stderr.count("\n") == 1
    assert resent.status == 200
    assert resent.headers["Idempotent-Replayed"] == "true"
    assert resent.body["ticket"]["state"] == "CANCELLED"
    assert [e["type"] for e in story].count("cancelled") == 1
    granted = next(e for e in story if e["type"] == "approval_granted")
    assert (granted["actor_id"], granted["role"]) == ("sup-1", "supervisor")


async def test_deny_needs_a_reason_and_the_agent_is_told_it(bridge: Bridge, tmp_path: Path) -> None:
    tid = await _ticket(bridge)
    key = str(uuid.uuid4())
    approval = (await _ask_to_cancel(bridge, tid, key)).body["approval"]

    no_reason = await _cli(bridge, tmp_path, "deny", approval["id"])
    denied = await _cli(
        bridge, tmp_path, "deny", approval["id"], "--reason", "the visit is still wanted", "--json"
    )
    resent = await _ask_to_cancel(bridge, tid, key)
    ticket = await bridge.api.request("GET", f"/v1/tickets/{tid}")

    assert no_reason.returncode == 2
    assert "--reason" in no_reason.stderr
    assert denied.returncode == 0, denied.stderr
    view = json.loads(denied.stdout)
    assert (view["status"], view["reason"]) == ("denied", "the visit is still wanted")
    assert view["decided_by"] == {"id": "sup-1", "role": "supervisor"}
    assert resent.status == 409
    assert resent.body["code"] == "approval_denied"
    assert ticket.body["state"] == "READY_TO_SCHEDULE"


async def test_who_may_not_decide_an_unknown_id_and_a_changed_ticket_each_get_one_line(
    bridge: Bridge, tmp_path: Path
) -> None:
    tid = await _ticket(bridge)
    approval = (await _ask_to_cancel(bridge, tid, str(uuid.uuid4()))).body["approval"]
    # an agent that shares a person's id cannot have that person approve its request
    own = (
        await _ask_to_cancel(
            bridge, await _ticket(bridge), str(uuid.uuid4()), **{"X-Actor-Id": "disp-1"}
        )
    ).body["approval"]

    gateway = await _cli(bridge, tmp_path, "approve", approval["id"], as_="gateway")
    technician = await _cli(bridge, tmp_path, "approve", approval["id"], as_="technician")
    itself = await _cli(bridge, tmp_path, "approve", own["id"], as_="dispatcher")
    unknown = await _cli(bridge, tmp_path, "approve", str(uuid.uuid4()))
    held = await bridge.api.act(tid, "hold", {"reason": "parts", "cause": "provider"})
    stale = await _cli(bridge, tmp_path, "approve", approval["id"])
    ticket = await bridge.api.request("GET", f"/v1/tickets/{tid}")

    assert (gateway.returncode, technician.returncode, itself.returncode) == (3, 3, 3)
    assert gateway.stderr.startswith("dispatch-bridge approve: 403 forbidden: ")
    assert "approvals are decided by people" in gateway.stderr
    assert technician.stderr.startswith("dispatch-bridge approve: 403 forbidden: ")
    assert itself.stderr.startswith("dispatch-bridge approve: 403 self_approval: ")
    assert "another person must decide" in itself.stderr
    assert unknown.returncode == 4
    assert unknown.stderr.startswith("dispatch-bridge approve: 404 approval_not_found")
    assert held.status == 200, held.body
    assert stale.returncode == 5
    assert stale.stderr == (
        f"dispatch-bridge approve: 409 approval_stale: ticket {tid} changed since the agent"
        f" asked (version {approval['ticket_version']}); nothing was done. See"
        f" `dispatch-bridge why {tid}`; the agent must look again and ask again.\n"
    )
    assert ticket.body["state"] == "ON_HOLD"
    for run in (gateway, technician, itself, unknown, stale):
        assert run.stderr.count("\n") == 1


async def test_the_listing_is_bounded_and_says_when_it_was_cut(bridge: Bridge) -> None:
    for _ in range(3):
        asked = await _ask_to_cancel(bridge, await _ticket(bridge), str(uuid.uuid4()))
        assert asked.status == 202, asked.body
    ends = operator_endpoints(bridge)

    cut = await approvals(ends, "pending", as_json=False, most=2)
    whole = await approvals(ends, "pending", as_json=False, most=3)
    as_json = json.loads(await approvals(ends, "pending", as_json=True, most=2))

    assert cut.endswith("(the first 2 approvals shown; there are more)")
    assert cut.count("ticket.cancel") == 2
    assert "there are more" not in whole
    assert whole.count("ticket.cancel") == 3
    assert len(as_json) == 2
