"""Who may decide and who may see an approval: people with an approving role decide, never
the gateway (whatever actor it asserts), never the requester; a gateway sees only what the
actor it asserts asked for."""

from __future__ import annotations

import uuid

import pytest

from dispatch_api.domain import Role
from dispatch_api.store import connect, principals
from testkit.api import Api, Reply
from testkit.approvals import AGENT_ID, AgentCall, cancel_call, decide, event_types, statuses

AS_AGENT = {"X-Actor-Type": "agent", "X-Actor-Id": AGENT_ID, "X-Actor-Role": "dispatcher"}
AS_OTHER_AGENT = {**AS_AGENT, "X-Actor-Id": "agent-8"}
AS_SUPERVISOR = {"X-Actor-Type": "human", "X-Actor-Id": "sup-9", "X-Actor-Role": "supervisor"}


async def pending_cancel(api: Api) -> tuple[str, str]:
    """A ticket and the id of its pending cancel approval."""
    ticket = await api.create_ticket()
    reply = await cancel_call(api, ticket["id"]).send()
    assert reply.status == 202, reply.body
    return ticket["id"], reply.body["approval"]["id"]


async def as_gateway(api: Api, method: str, path: str, headers: dict[str, str]) -> Reply:
    body = {"reason": "looks right"} if method == "POST" else None
    return await api.request(method, path, json=body, as_="gateway", key=None, headers=headers)


@pytest.mark.parametrize("asserted", [{}, AS_AGENT, AS_SUPERVISOR], ids=["none", "agent", "human"])
async def test_the_gateway_cannot_approve_or_deny_whatever_actor_it_asserts(
    api: Api, asserted: dict[str, str]
) -> None:
    ticket_id, approval_id = await pending_cancel(api)

    for verdict in ("approve", "deny"):
        path = f"/v1/approvals/{approval_id}/{verdict}"
        reply = await as_gateway(api, "POST", path, asserted)
        assert reply.status == 403, reply.body
        assert reply.body["code"] == "forbidden"
        assert "people" in reply.body["detail"]

    assert await statuses(api) == ["pending"]
    assert await event_types(api, ticket_id) == ["created", "approval_requested"]


async def test_a_role_not_among_the_rules_approvers_cannot_decide_and_one_that_is_can(
    api: Api,
) -> None:
    # The shipped emergency-dispatch rule lets only supervisors approve.
    ticket = await api.create_ticket(priority="P1")
    await api.ensure_technician("tech-1")
    body = {"technician_id": "tech-1", "bypass_reason": "gas smell reported"}
    call = AgentCall(api, ticket["id"], "dispatch", "ticket.dispatch", body, str(uuid.uuid4()))
    asked = await call.send()
    assert asked.status == 202, asked.body
    approval_id = asked.body["approval"]["id"]
    assert asked.body["approval"]["approvers"] == ["supervisor"]

    by_dispatcher = await decide(api, approval_id, "approve", as_="dispatcher")
    by_supervisor = await decide(api, approval_id, "approve", as_="supervisor")

    assert by_dispatcher.status == 403
    assert by_dispatcher.body["code"] == "forbidden"
    assert by_dispatcher.body["approvers"] == ["supervisor"]
    assert by_supervisor.status == 200, by_supervisor.body
    assert by_supervisor.body["approval"]["status"] == "executed"
    assert (await call.send()).body["ticket"]["state"] == "DISPATCHED"


async def test_a_person_whose_id_is_the_requesting_agents_cannot_approve_it(api: Api) -> None:
    ticket_id, approval_id = await pending_cancel(api)
    token = principals.new_token()
    conn = await connect(api.database_url)
    try:
        await principals.upsert(conn, AGENT_ID, Role.SUPERVISOR, token)
    finally:
        await conn.close()
    api.tokens["agent_as_person"] = token

    reply = await decide(api, approval_id, "approve", as_="agent_as_person")

    assert reply.status == 403
    assert reply.body["code"] == "self_approval"
    assert await statuses(api) == ["pending"]
    assert await event_types(api, ticket_id) == ["created", "approval_requested"]


async def test_a_technician_cannot_decide_nor_see_approvals(api: Api) -> None:
    _, approval_id = await pending_cancel(api)

    approve = await decide(api, approval_id, "approve", as_="technician")
    listing = await api.request("GET", "/v1/approvals", as_="technician")
    one = await api.request("GET", f"/v1/approvals/{approval_id}", as_="technician")

    assert approve.status == 403
    assert listing.status == 200
    assert listing.body["items"] == []
    assert one.status == 404
    assert one.body["code"] == "approval_not_found"
    assert await statuses(api) == ["pending"]


async def test_the_gateway_sees_only_the_approvals_of_the_actor_it_asserts(api: Api) -> None:
    _, approval_id = await pending_cancel(api)
    path = f"/v1/approvals/{approval_id}"

    other_one = await as_gateway(api, "GET", path, AS_OTHER_AGENT)
    other_list = await as_gateway(api, "GET", "/v1/approvals", AS_OTHER_AGENT)
    other_withdraw = await as_gateway(api, "POST", f"{path}/withdraw", AS_OTHER_AGENT)
    own_one = await as_gateway(api, "GET", path, AS_AGENT)
    own_list = await as_gateway(api, "GET", "/v1/approvals", AS_AGENT)

    assert other_one.status == 404
    assert other_one.body["code"] == "approval_not_found"
    assert other_list.body["items"] == []
    assert other_withdraw.status == 404
    assert own_one.status == 200
    assert own_one.body["approval"]["id"] == approval_id
    assert [a["id"] for a in own_list.body["items"]] == [approval_id]
    assert await statuses(api) == ["pending"]


async def test_people_list_every_approval_oldest_first_by_status_and_ticket_in_pages(
    api: Api,
) -> None:
    made = []
    for _ in range(3):
        made.append(await pending_cancel(api))
        api.clock.advance(seconds=1)
    denied = await decide(api, made[0][1], "deny", reason="no")
    assert denied.status == 200

    pending = await api.request("GET", "/v1/approvals?status=pending", as_="dispatcher")
    of_ticket = await api.request("GET", f"/v1/approvals?ticket_id={made[2][0]}")
    first = await api.request("GET", "/v1/approvals?limit=2")
    second = await api.request("GET", f"/v1/approvals?limit=2&cursor={first.body['next_cursor']}")
    bad = await api.request("GET", "/v1/approvals?status=maybe")

    assert [a["id"] for a in pending.body["items"]] == [made[1][1], made[2][1]]
    assert [a["id"] for a in of_ticket.body["items"]] == [made[2][1]]
    pages = [a["id"] for a in first.body["items"] + second.body["items"]]
    assert pages == [a for _, a in made]
    assert second.body["next_cursor"] is None
    assert bad.status == 400
    assert bad.body["code"] == "invalid_query"


async def test_hostile_decisions_are_refused_precisely_and_change_nothing(
    api: Api, log_lines: list[bytes]
) -> None:
    ticket_id, approval_id = await pending_cancel(api)
    path = f"/v1/approvals/{approval_id}"
    huge_id = "x" * 4000

    answers = {
        "bad id": await api.request("POST", f"/v1/approvals/{huge_id}/approve", json={}, key=None),
        "long reason": await decide(api, approval_id, "deny", reason="r" * 501),
        "unknown field": await decide(api, approval_id, "approve", verdict_now=True),
        "not json": await api.request(
            "POST",
            f"{path}/approve",
            data=b"{",
            key=None,
            headers={"Content-Type": "application/json"},
        ),
        "bad key": await api.request(
            "POST", f"{path}/approve", json={}, key=None, headers={"Idempotency-Key": "a b"}
        ),
        "bad cursor": await api.request("GET", "/v1/approvals?cursor=bm9wZQ"),
        "missing": await decide(api, str(uuid.uuid4()), "approve"),
    }

    assert {name: r.status for name, r in answers.items()} == {
        "bad id": 400,
        "long reason": 422,
        "unknown field": 422,
        "not json": 400,
        "bad key": 400,
        "bad cursor": 400,
        "missing": 404,
    }
    assert answers["bad id"].body["code"] == "invalid_id"
    assert answers["missing"].body["code"] == "approval_not_found"
    assert all(len(r.raw) < 2048 for r in answers.values())
    assert all(len(line) < 8192 for line in log_lines)
    assert await statuses(api) == ["pending"]
    assert await event_types(api, ticket_id) == ["created", "approval_requested"]
