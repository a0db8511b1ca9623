"""Every tool, called once end to end, answers with output its schema accepts."""

from __future__ import annotations

from typing import Any

from testkit.api import COMPLETE_TICKET, WINDOW
from tools import catalog

from .conftest import Bridge


async def test_every_tool_runs_end_to_end_and_honours_its_output_schema(bridge: Bridge) -> None:
    # Bridge.invoke validates each successful result against the tool's output schema.
    called: set[str] = set()

    async def ok(tool: str, args: dict[str, Any]) -> dict[str, Any]:
        reply = await bridge.invoke(tool, args)
        assert reply.status == 200, (tool, reply.body)
        called.add(tool)
        result: dict[str, Any] = reply.body["result"]
        return result

    draft = {k: v for k, v in COMPLETE_TICKET.items() if k != "site_address"}
    tid = (await ok("ticket.create", draft))["ticket"]["id"]
    await ok("ticket.update", {"ticket_id": tid, "site_address": "1 Loop Rd", "reason": None})
    await ok("customer.follow_up", {"ticket_id": tid, "channel": "phone", "outcome": "reached"})
    await ok("ticket.hold", {"ticket_id": tid, "cause": "customer", "reason": "no access"})
    await ok("ticket.resume", {"ticket_id": tid})
    await ok("ticket.schedule", {"ticket_id": tid, **WINDOW})
    await ok("ticket.dispatch", {"ticket_id": tid})
    await ok("tech.arrive", {"ticket_id": tid})
    await ok("mitigation.record", {"ticket_id": tid, "action": "water main shut off"})
    await ok("ticket.escalate", {"ticket_id": tid, "reason": "ceiling sagging", "level": "manager"})
    for kind, tag in (("photo", "before"), ("photo", "after"), ("signature", "customer")):
        await ok(
            "evidence.attach",
            {
                "ticket_id": tid,
                "kind": kind,
                "tag": tag,
                "content_type": "image/jpeg",
                "content_base64": "aGk=",
            },
        )
    assert (await ok("tech.complete", {"ticket_id": tid}))["ticket"]["state"] == "COMPLETED"
    assert (await ok("ticket.get", {"ticket_id": tid}))["ticket"]["state"] == "COMPLETED"
    timeline = await ok("ticket.timeline", {"ticket_id": tid, "limit": 5})
    assert timeline["next_after_seq"] == 5
    other = (await ok("ticket.create", COMPLETE_TICKET))["ticket"]["id"]
    # The default policy holds ticket.cancel for a person: approve it, then re-send the call.
    cancel = {"ticket_id": other, "reason": "duplicate"}
    held = await bridge.invoke("ticket.cancel", cancel, tool_call_id="cancel-other")
    assert held.status == 202, held.body
    approval_id = held.body["error"]["details"]["approval_id"]
    assert (await ok("approval.status", {"approval_id": approval_id}))["approval"]["status"] == (
        "pending"
    )
    approved = await bridge.api.request(
        "POST", f"/v1/approvals/{approval_id}/approve", json={}, as_="supervisor"
    )
    assert approved.status == 200, approved.body
    resent = await bridge.invoke("ticket.cancel", cancel, tool_call_id="cancel-other")
    assert resent.status == 200, resent.body
    assert resent.body["result"]["ticket"]["state"] == "CANCELLED"
    called.add("ticket.cancel")
    page = await ok("queue.view", {"state": ["COMPLETED", "CANCELLED"], "limit": 1})
    assert len(page["items"]) == 1
    assert page["next_cursor"]
    rest = await ok(
        "queue.view", {"state": ["COMPLETED", "CANCELLED"], "cursor": page["next_cursor"]}
    )
    assert {page["items"][0]["id"], rest["items"][0]["id"]} == {tid, other}
    technicians = await ok("technician.list", {"skill": "water_leak"})
    assert technicians["next_cursor"] is None
    sla = await ok("sla.status", {"status": "at_risk"})
    assert (sla["available"], sla["status"]) == (True, "at_risk")

    assert called == {t.name for t in catalog()}
