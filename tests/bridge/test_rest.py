"""Agents call tools over REST: the envelope, request ids, errors, permissions."""

from __future__ import annotations

import uuid

import pytest

from testkit.api import COMPLETE_TICKET, WINDOW

from .conftest import Bridge


async def _ticket_on_site(bridge: Bridge) -> str:
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    tid: str = created.body["result"]["ticket"]["id"]
    for tool, args in (
        ("ticket.schedule", {"ticket_id": tid, **WINDOW}),
        ("ticket.dispatch", {"ticket_id": tid}),
        ("tech.arrive", {"ticket_id": tid}),
    ):
        reply = await bridge.invoke(tool, args)
        assert reply.status == 200, reply.body
    return tid


async def test_rb2_completion_is_refused_until_the_evidence_is_attached(bridge: Bridge) -> None:
    tid = await _ticket_on_site(bridge)

    refused = await bridge.invoke("tech.complete", {"ticket_id": tid}, as_="technician")

    assert refused.status == 422
    error = refused.body["error"]
    assert error["code"] == "evidence_missing"
    assert "photo:before, photo:after, signature:customer" in error["message"]
    assert [m["tag"] for m in error["details"]["missing_evidence"]] == [
        "before",
        "after",
        "customer",
    ]
    assert error["retryable"] is False
    for kind, tag in (("photo", "before"), ("photo", "after"), ("signature", "customer")):
        attached = await bridge.invoke(
            "evidence.attach",
            {
                "ticket_id": tid,
                "kind": kind,
                "tag": tag,
                "content_type": "image/png",
                "content_base64": "aGVsbG8=",
            },
            as_="technician",
        )
        assert attached.status == 200, attached.body
    done = await bridge.invoke("tech_complete", {"ticket_id": tid}, as_="technician")

    assert done.status == 200, done.body
    assert done.body["result"]["ticket"]["state"] == "COMPLETED"
    assert done.body["request_id"] != refused.body["request_id"]
    events = await bridge.api.timeline(tid)
    attempts = [e for e in events if e["type"] in ("completion_rejected", "completed")]
    assert [
        (e["type"], e["actor_type"], e["actor_id"], e["role"], e["tool_name"]) for e in attempts
    ] == [
        ("completion_rejected", "agent", "tech-1", "technician", "tech.complete"),
        ("completed", "agent", "tech-1", "technician", "tech.complete"),
    ]
    assert [e["request_id"] for e in attempts] == [
        refused.body["request_id"],
        done.body["request_id"],
    ]


async def test_the_envelope_carries_result_and_ids(bridge: Bridge) -> None:
    reply = await bridge.invoke(
        "ticket.create", COMPLETE_TICKET, headers={"X-Correlation-ID": "case-4711"}
    )

    assert reply.status == 200
    assert set(reply.body) == {
        "ok",
        "tool",
        "result",
        "replayed",
        "request_id",
        "correlation_id",
        "trace_id",
    }
    assert reply.body["ok"] is True
    assert reply.body["replayed"] is False
    assert reply.body["tool"] == "ticket.create"
    assert reply.body["correlation_id"] == reply.headers["X-Correlation-ID"] == "case-4711"
    uuid.UUID(reply.body["request_id"])
    event = reply.body["result"]["event"]
    assert (event["request_id"], event["correlation_id"]) == (reply.body["request_id"], "case-4711")


async def test_a_traceparent_from_the_agent_reaches_the_timeline(bridge: Bridge) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    reply = await bridge.invoke(
        "ticket.create",
        COMPLETE_TICKET,
        headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
    )

    assert reply.body["trace_id"] == trace_id
    assert reply.body["result"]["event"]["trace_id"] == trace_id


async def test_every_call_gets_a_new_request_id_unless_the_agent_names_it(bridge: Bridge) -> None:
    first = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    second = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    named = await bridge.invoke("ticket.create", COMPLETE_TICKET, tool_call_id="call_abc")
    again = await bridge.invoke("ticket.create", COMPLETE_TICKET, tool_call_id="call_abc")

    assert first.body["request_id"] != second.body["request_id"]
    assert named.body["request_id"] == again.body["request_id"]
    assert named.body["result"] == again.body["result"]
    assert await bridge.api.count("SELECT count(*) FROM tickets") == 3


async def test_a_reused_tool_call_id_with_other_arguments_is_an_idempotency_conflict(
    bridge: Bridge,
) -> None:
    await bridge.invoke("ticket.create", COMPLETE_TICKET, tool_call_id="call_1")
    other = {**COMPLETE_TICKET, "customer_name": "Someone Else"}

    reply = await bridge.invoke("ticket.create", other, tool_call_id="call_1")

    assert reply.body["error"]["code"] == "idempotency_conflict"
    assert await bridge.api.count("SELECT count(*) FROM tickets") == 1


async def test_an_invalid_transition_lists_the_allowed_actions(bridge: Bridge) -> None:
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    tid = created.body["result"]["ticket"]["id"]

    reply = await bridge.invoke("tech.arrive", {"ticket_id": tid})

    assert reply.status == 409
    error = reply.body["error"]
    assert error["code"] == "invalid_transition"
    assert "schedule" in error["details"]["allowed_actions"]
    assert "schedule" in error["message"]


async def test_invalid_arguments_name_path_expectation_and_value_and_reach_nothing(
    bridge: Bridge,
) -> None:
    reply = await bridge.invoke(
        "ticket.create", {**COMPLETE_TICKET, "priority": "P9", "colour": "red"}
    )

    assert reply.status == 422
    error = reply.body["error"]
    assert error["code"] == "invalid_arguments"
    by_path = {e["path"]: e for e in error["details"]["errors"]}
    assert by_path["/priority"]["received"] == '"P9"'
    assert "P1" in by_path["/priority"]["expected"]
    assert "/colour" in by_path
    assert bridge.proxy.requests == 0


async def test_bad_bodies_get_precise_errors_and_reach_nothing(bridge: Bridge) -> None:
    path = "/v1/tools/ticket.create/invoke"
    cases = [
        (b"{not json", "application/json", 422),
        (b'["arguments"]', "application/json", 422),
        (b'{"arguments": {}, "extra": 1}', "application/json", 422),
        (b'{"arguments": "a string"}', "application/json", 422),
        (b'{"arguments": {}, "tool_call_id": "has spaces"}', "application/json", 422),
        (b'{"arguments": {}}', "text/plain", 415),  # JSON, but not declared as JSON
    ]
    for data, ctype, status in cases:
        reply = await bridge.request("POST", path, data=data, headers={"Content-Type": ctype})
        assert reply.status == status, data
        assert reply.body["ok"] is False
        assert reply.body["error"]["code"] == "invalid_arguments", data
    assert bridge.proxy.requests == 0


@pytest.mark.parametrize("bridge_overrides", [{"max_body_bytes": 4096}])
async def test_an_oversized_body_is_refused_with_413(bridge: Bridge) -> None:
    data = b'{"arguments": {"description": "' + b"x" * 4096 + b'"}}'

    reply = await bridge.request(
        "POST",
        "/v1/tools/ticket.create/invoke",
        data=data,
        headers={"Content-Type": "application/json"},
    )

    assert reply.status == 413
    assert reply.body["error"]["code"] == "invalid_arguments"
    assert reply.body["error"]["details"]["limit_bytes"] == 4096
    assert bridge.proxy.requests == 0


async def test_an_unknown_tool_is_refused_with_the_tools_that_exist(bridge: Bridge) -> None:
    reply = await bridge.invoke("ticket.teleport", {})

    assert reply.status == 404
    assert reply.body["error"]["code"] == "unknown_tool"
    assert "ticket.create" in reply.body["error"]["details"]["available"]
    assert bridge.proxy.requests == 0


async def test_a_missing_or_wrong_key_is_unauthenticated(bridge: Bridge) -> None:
    missing = await bridge.invoke("ticket.get", {"ticket_id": str(uuid.uuid4())}, as_="")
    wrong = await bridge.invoke(
        "ticket.get",
        {"ticket_id": str(uuid.uuid4())},
        as_="",
        headers={"Authorization": "Bearer nope"},
    )
    listing = await bridge.request("GET", "/v1/tools", as_="")

    for reply in (missing, wrong):
        assert reply.status == 401
        assert reply.body["error"]["code"] == "unauthenticated"
    assert listing.status == 401
    assert listing.headers["WWW-Authenticate"].startswith("Bearer")
    assert bridge.proxy.requests == 0


async def test_a_role_without_permission_neither_sees_nor_calls_a_tool(bridge: Bridge) -> None:
    listing = await bridge.request("GET", "/v1/tools", as_="technician")
    names = [t["name"] for t in listing.body["tools"]]

    reply = await bridge.invoke(
        "ticket.cancel", {"ticket_id": str(uuid.uuid4()), "reason": "x"}, as_="technician"
    )

    assert "ticket_cancel" not in names
    assert "tech_complete" in names
    assert reply.status == 403
    assert reply.body["error"]["code"] == "forbidden"
    assert bridge.proxy.requests == 0


async def test_tools_are_listed_for_mcp_openai_and_anthropic(bridge: Bridge) -> None:
    mcp = await bridge.request("GET", "/v1/tools")
    openai = await bridge.request("GET", "/v1/tools?format=openai")
    anthropic = await bridge.request("GET", "/v1/tools?format=anthropic")
    bad = await bridge.request("GET", "/v1/tools?format=yaml")

    assert [t["name"] for t in mcp.body["tools"]][:2] == ["ticket_create", "ticket_get"]
    assert [t["title"] for t in mcp.body["tools"]][:2] == ["ticket.create", "ticket.get"]
    assert openai.body["tools"][0]["function"]["name"] == "ticket_create"
    assert anthropic.body["tools"][0]["name"] == "ticket_create"
    assert bad.status == 422


async def test_the_effective_retry_policy_is_shown_without_secrets(bridge: Bridge) -> None:
    reply = await bridge.request("GET", "/v1/config")

    assert reply.status == 200
    assert reply.body["retry"]["default"]["max_attempts"] == 3
    assert bridge.api.tokens["gateway"] not in reply.raw.decode()
    assert all(key not in reply.raw.decode() for key in bridge.keys.values())


async def test_the_configuration_is_for_supervisors_only(bridge: Bridge) -> None:
    refused = [
        await bridge.request("GET", "/v1/config", as_=r) for r in ("dispatcher", "technician")
    ]

    for reply in refused:
        assert (reply.status, reply.body["code"]) == (403, "forbidden")
        assert bridge.proxy.url not in reply.raw.decode()
        assert "agent-sup" not in reply.raw.decode()


async def test_health_and_readiness(bridge: Bridge) -> None:
    alive = await bridge.request("GET", "/healthz", as_="")
    ready = await bridge.request("GET", "/readyz", as_="")

    assert alive.status == 200
    assert ready.status == 200
    assert ready.body == {
        "status": "ready",
        "dispatch_api": "ok",
        "breaker": "closed",
        "draining": False,
    }


async def test_ids_are_echoed_on_every_response_and_an_unsafe_correlation_id_is_refused(
    bridge: Bridge,
) -> None:
    listing = await bridge.request(
        "GET", "/v1/tools", headers={"X-Correlation-ID": "case-1", "X-Request-ID": "req-1"}
    )
    health = await bridge.request("GET", "/healthz", as_="")
    unsafe = await bridge.request("GET", "/v1/tools", headers={"X-Correlation-ID": "a b\tc"})

    assert (listing.headers["X-Correlation-ID"], listing.headers["X-Request-ID"]) == (
        "case-1",
        "req-1",
    )
    uuid.UUID(health.headers["X-Correlation-ID"])
    uuid.UUID(health.headers["X-Request-ID"])
    assert unsafe.status == 400
    assert unsafe.body["header"] == "X-Correlation-ID"
    assert "a b" not in unsafe.headers["X-Correlation-ID"]
