"""Tickets over HTTP: create, read, update, list, templates, actions and their timeline."""

from __future__ import annotations

import re
import uuid
from typing import Any

import asyncpg
import orjson
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dispatch_api.store import connect
from testkit.api import COMPLETE_TICKET, WINDOW, Api


async def get_ticket(api: Api, ticket_id: str) -> dict[str, Any]:
    reply = await api.request("GET", f"/v1/tickets/{ticket_id}")
    assert reply.status == 200, reply.body
    ticket: dict[str, Any] = reply.body
    return ticket


async def list_ids(api: Api, query: str) -> list[str]:
    reply = await api.request("GET", f"/v1/tickets?{query}")
    assert reply.status == 200, reply.body
    assert reply.body["next_cursor"] is None
    return [t["id"] for t in reply.body["items"]]


async def all_pages(api: Api, limit: int) -> list[list[str]]:
    """Ticket ids page by page, following next_cursor until it is null."""
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        query = f"limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        reply = await api.request("GET", f"/v1/tickets?{query}")
        assert reply.status == 200, reply.body
        pages.append([t["id"] for t in reply.body["items"]])
        cursor = reply.body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) <= 10, "pagination does not end"


# --- create, read, update -----------------------------------------------------------------


async def test_a_ticket_missing_required_fields_is_created_new_listing_them(api: Api) -> None:
    reply = await api.request("POST", "/v1/tickets", json={"customer_name": "Ada Lovelace"})

    assert reply.status == 201, reply.body
    ticket, event = reply.body["ticket"], reply.body["event"]
    assert ticket["state"] == "NEW"
    assert ticket["missing_fields"] == ["contact", "site_address", "incident_type", "priority"]
    assert event["type"] == "created"
    assert event["to_state"] == "NEW"
    assert event["details"]["missing_fields"] == ticket["missing_fields"]

    empty = await api.request("POST", "/v1/tickets", json={})
    assert empty.status == 201, empty.body
    assert empty.body["ticket"]["missing_fields"] == [
        "customer_name",
        "contact",
        "site_address",
        "incident_type",
        "priority",
    ]


async def test_the_contact_requirement_is_met_by_a_phone_or_an_email(api: Api) -> None:
    no_contact = {k: v for k, v in COMPLETE_TICKET.items() if k != "contact_phone"}

    by_phone = await api.create_ticket()
    by_email = await api.request(
        "POST", "/v1/tickets", json={**no_contact, "contact_email": "ada@example.org"}
    )
    neither = await api.request("POST", "/v1/tickets", json=no_contact)

    assert by_phone["state"] == by_email.body["ticket"]["state"] == "READY_TO_SCHEDULE"
    assert by_phone["missing_fields"] == by_email.body["ticket"]["missing_fields"] == []
    assert by_email.body["ticket"]["contact_phone"] is None
    assert neither.body["ticket"]["state"] == "NEW"
    assert neither.body["ticket"]["missing_fields"] == ["contact"]


async def test_get_shows_allowed_actions_missing_fields_evidence_and_assignment(api: Api) -> None:
    ticket = await api.create_ticket()
    fresh = await get_ticket(api, ticket["id"])
    assert fresh["allowed_actions"] == [
        "attach_evidence",
        "cancel",
        "contact_attempt",
        "escalate",
        "hold",
        "mitigate",
        "schedule",
        "update",
    ]
    assert fresh["missing_fields"] == []
    assert fresh["evidence"] == []
    assert fresh["assignment"] is None
    assert fresh["hold"] is None

    assert (await api.act(ticket["id"], "schedule", WINDOW)).status == 200
    scheduled = await get_ticket(api, ticket["id"])

    assert scheduled["state"] == "SCHEDULED"
    assert scheduled["assignment"] == {
        "technician_id": "tech-1",
        "window_start": "2026-11-27T13:00:00+00:00",
        "window_end": "2026-11-27T15:00:00+00:00",
    }
    assert "dispatch" in scheduled["allowed_actions"]
    assert "schedule" in scheduled["allowed_actions"]
    assert scheduled["last_event_seq"] == 2
    assert {k: scheduled[k] for k in COMPLETE_TICKET} == COMPLETE_TICKET


async def test_a_schedule_window_given_in_another_offset_is_stored_as_the_same_instant(
    api: Api,
) -> None:
    ticket = await api.create_ticket()
    window = {**WINDOW, "window_start": "2026-11-27T15:00:00+02:00"}

    reply = await api.act(ticket["id"], "schedule", window)

    assert reply.status == 200, reply.body
    answered = reply.body["ticket"]["assignment"]
    stored = (await get_ticket(api, ticket["id"]))["assignment"]
    assert answered == stored
    assert stored["window_start"] == "2026-11-27T13:00:00+00:00"


async def test_patch_filling_the_missing_fields_makes_the_ticket_ready(api: Api) -> None:
    created = await api.request(
        "POST", "/v1/tickets", json={"customer_name": "Ada Lovelace", "priority": "P3"}
    )
    tid = created.body["ticket"]["id"]

    partly = await api.request(
        "PATCH", f"/v1/tickets/{tid}", json={"contact_email": "ada@example.org"}
    )
    assert partly.status == 200, partly.body
    assert partly.body["ticket"]["state"] == "NEW"
    assert partly.body["ticket"]["missing_fields"] == ["site_address", "incident_type"]

    filled = await api.request(
        "PATCH",
        f"/v1/tickets/{tid}",
        json={
            "site_address": "12 Analytical Row, London",
            "incident_type": "no_heat",
            "reason": "customer called back",
        },
    )

    assert filled.status == 200, filled.body
    assert filled.body["ticket"]["state"] == "READY_TO_SCHEDULE"
    assert filled.body["ticket"]["missing_fields"] == []
    event = filled.body["event"]
    assert event["type"] == "updated"
    assert (event["from_state"], event["to_state"]) == ("NEW", "READY_TO_SCHEDULE")
    assert event["details"]["changed_fields"] == ["incident_type", "site_address"]
    assert event["details"]["missing_fields"] == []
    assert event["reason"] == "customer called back"
    assert (await get_ticket(api, tid))["incident_type"] == "no_heat"
    timeline = await api.timeline(tid)
    assert [e["type"] for e in timeline] == ["created", "updated", "updated"]
    assert timeline[1]["details"]["changed_fields"] == ["contact_email"]


async def test_patch_on_a_ready_ticket_changes_fields_but_not_the_state(api: Api) -> None:
    ticket = await api.create_ticket()

    reply = await api.request(
        "PATCH", f"/v1/tickets/{ticket['id']}", json={"priority": "P1", "description": "urgent"}
    )

    assert reply.status == 200, reply.body
    assert reply.body["ticket"]["state"] == "READY_TO_SCHEDULE"
    assert reply.body["ticket"]["priority"] == "P1"
    assert reply.body["event"]["details"]["changed_fields"] == ["description", "priority"]
    assert "dispatch" in reply.body["ticket"]["allowed_actions"]  # P1 may bypass scheduling


# --- listing ---------------------------------------------------------------------------------


async def test_list_filters_by_state_priority_and_technician(api: Api) -> None:
    p1 = (await api.create_ticket(priority="P1"))["id"]
    p2 = (await api.create_ticket(priority="P2"))["id"]
    p3 = (await api.create_ticket(priority="P3"))["id"]
    p4 = (await api.create_ticket(priority="P4"))["id"]
    new = (await api.request("POST", "/v1/tickets", json={"priority": "P2"})).body["ticket"]["id"]
    assert (await api.act(p2, "schedule", WINDOW)).status == 200
    assert (await api.act(p3, "schedule", {**WINDOW, "technician_id": "tech-2"})).status == 200

    assert set(await list_ids(api, "")) == {p1, p2, p3, p4, new}
    assert set(await list_ids(api, "state=SCHEDULED")) == {p2, p3}
    assert set(await list_ids(api, "state=NEW,SCHEDULED")) == {p2, p3, new}
    assert set(await list_ids(api, "state=NEW&state=SCHEDULED")) == {p2, p3, new}
    assert set(await list_ids(api, "priority=P1,P2")) == {p1, p2, new}
    assert set(await list_ids(api, "priority=P1&priority=P3")) == {p1, p3}
    assert set(await list_ids(api, "priority=P1,P2&priority=P4")) == {p1, p2, p4, new}
    assert set(await list_ids(api, "technician_id=tech-2")) == {p3}
    assert set(await list_ids(api, "state=SCHEDULED&priority=P2")) == {p2}
    assert set(await list_ids(api, "state=SCHEDULED&technician_id=tech-1")) == {p2}
    assert await list_ids(api, "state=COMPLETED") == []


async def test_a_technician_lists_only_the_tickets_assigned_to_them(api: Api) -> None:
    mine = (await api.create_ticket())["id"]
    theirs = (await api.create_ticket())["id"]
    await api.create_ticket()
    assert (await api.act(mine, "schedule", WINDOW)).status == 200
    assert (await api.act(theirs, "schedule", {**WINDOW, "technician_id": "tech-2"})).status == 200

    reply = await api.request("GET", "/v1/tickets?technician_id=tech-2", as_="technician")

    assert reply.status == 200, reply.body
    assert [t["id"] for t in reply.body["items"]] == [mine]


async def test_pages_visit_every_ticket_once_in_creation_order(api: Api) -> None:
    created = []
    for _ in range(7):
        created.append((await api.create_ticket())["id"])
        api.clock.advance(minutes=1)

    pages = await all_pages(api, limit=3)

    assert [len(p) for p in pages] == [3, 3, 1]
    assert [tid for page in pages for tid in page] == created


async def test_pages_that_end_exactly_at_the_last_ticket_have_no_next_cursor(api: Api) -> None:
    created = []
    for _ in range(6):
        created.append((await api.create_ticket())["id"])
        api.clock.advance(seconds=1)

    pages = await all_pages(api, limit=3)

    assert [tid for page in pages for tid in page] == created
    assert [len(p) for p in pages] == [3, 3]


async def test_tickets_created_at_the_same_instant_still_page_without_loss(api: Api) -> None:
    # The key is (created_at, id): ties on time are broken by id, across page boundaries.
    first = [(await api.create_ticket())["id"] for _ in range(4)]
    api.clock.advance(seconds=1)
    second = [(await api.create_ticket())["id"] for _ in range(3)]
    expected = sorted(first, key=uuid.UUID) + sorted(second, key=uuid.UUID)

    for limit in (1, 2, 3):
        pages = await all_pages(api, limit=limit)
        assert [tid for page in pages for tid in page] == expected, limit


# --- templates and timeline -----------------------------------------------------------------


async def test_templates_list_the_incident_types_and_their_evidence_requirements(
    api: Api,
) -> None:
    reply = await api.request("GET", "/v1/templates")

    assert reply.status == 200, reply.body
    templates = {t["name"]: t for t in reply.body["templates"]}
    assert {"water_leak", "no_heat", "lockout", "electrical_hazard"} <= templates.keys()

    def needs(name: str) -> list[tuple[str, str | None]]:
        return [(r["kind"], r["tag"]) for r in templates[name]["requirements"]]

    assert needs("water_leak") == [
        ("photo", "before"),
        ("photo", "after"),
        ("signature", "customer"),
    ]
    assert needs("no_heat") == [
        ("photo", "before"),
        ("document", "readings"),
        ("signature", "customer"),
    ]
    assert needs("lockout") == [("document", "id_check"), ("signature", "customer")]
    assert needs("electrical_hazard") == [
        ("photo", "before"),
        ("photo", "after"),
        ("document", "safety_check"),
        ("signature", "customer"),
    ]
    assert templates["water_leak"]["title"] == "Water leak"
    assert all(r["description"] for t in templates.values() for r in t["requirements"])


async def test_the_timeline_pages_with_after_seq_and_limit(api: Api) -> None:
    ticket = await api.create_ticket()
    for outcome in ("no_answer", "left_message", "wrong_number", "reached"):
        reply = await api.act(
            ticket["id"], "contact-attempts", {"channel": "phone", "outcome": outcome}
        )
        assert reply.status == 200, reply.body
    base = f"/v1/tickets/{ticket['id']}/timeline"

    def seqs(reply: Any) -> list[int]:
        return [e["seq"] for e in reply.body["events"]]

    first = await api.request("GET", f"{base}?limit=2")
    assert (seqs(first), first.body["next_after_seq"]) == ([1, 2], 2)
    assert first.body["ticket_id"] == ticket["id"]
    second = await api.request("GET", f"{base}?limit=2&after_seq=2")
    assert (seqs(second), second.body["next_after_seq"]) == ([3, 4], 4)
    last = await api.request("GET", f"{base}?limit=2&after_seq=4")
    assert (seqs(last), last.body["next_after_seq"]) == ([5], None)
    beyond = await api.request("GET", f"{base}?after_seq=5")
    assert (seqs(beyond), beyond.body["next_after_seq"]) == ([], None)
    everything = await api.request("GET", base)
    assert seqs(everything) == [1, 2, 3, 4, 5]


# --- dispatch and the emergency bypass ------------------------------------------------------


async def test_a_p1_ticket_bypasses_scheduling_with_a_logged_bypass_reason(api: Api) -> None:
    ticket = await api.create_ticket(priority="P1")
    assert "dispatch" in ticket["allowed_actions"]

    reply = await api.act(
        ticket["id"],
        "dispatch",
        {"technician_id": "tech-1", "bypass_reason": "gas smell reported"},
    )

    assert reply.status == 200, reply.body
    assert reply.body["ticket"]["state"] == "DISPATCHED"
    assert reply.body["ticket"]["assignment"]["technician_id"] == "tech-1"
    event = (await api.timeline(ticket["id"]))[-1]
    assert event["type"] == "dispatched"
    assert (event["from_state"], event["to_state"]) == ("READY_TO_SCHEDULE", "DISPATCHED")
    assert event["details"]["bypass"] is True
    assert event["details"]["bypass_reason"] == "gas smell reported"


async def test_a_p2_bypass_is_rejected_409_and_recorded_on_the_timeline(api: Api) -> None:
    ticket = await api.create_ticket(priority="P2")

    reply = await api.act(
        ticket["id"], "dispatch", {"technician_id": "tech-1", "bypass_reason": "impatient"}
    )

    assert reply.status == 409, reply.body
    assert reply.content_type == "application/problem+json"
    assert reply.body["code"] == "invalid_transition"
    assert "dispatch" not in reply.body["allowed_actions"]
    assert "schedule" in reply.body["allowed_actions"]
    assert reply.body["event_seq"] == 2
    event = (await api.timeline(ticket["id"]))[-1]
    assert event["seq"] == 2
    assert event["type"] == "action_rejected"
    assert event["from_state"] == event["to_state"] == "READY_TO_SCHEDULE"
    assert event["details"]["code"] == "invalid_transition"
    assert event["details"]["action"] == "dispatch"
    assert (await get_ticket(api, ticket["id"]))["state"] == "READY_TO_SCHEDULE"


async def test_a_p1_bypass_without_bypass_reason_is_422_and_recorded(api: Api) -> None:
    ticket = await api.create_ticket(priority="P1")

    reply = await api.act(ticket["id"], "dispatch", {"technician_id": "tech-1"})

    assert reply.status == 422, reply.body
    assert reply.content_type == "application/problem+json"
    assert reply.body["code"] == "bypass_reason_required"
    assert [f["field"] for f in reply.body["invalid_fields"]] == ["bypass_reason"]
    event = (await api.timeline(ticket["id"]))[-1]
    assert event["type"] == "action_rejected"
    assert event["details"]["code"] == "bypass_reason_required"
    assert (await get_ticket(api, ticket["id"]))["state"] == "READY_TO_SCHEDULE"


async def test_a_scheduled_ticket_dispatches_without_a_bypass(api: Api) -> None:
    ticket = await api.create_ticket(priority="P3")
    assert (await api.act(ticket["id"], "schedule", WINDOW)).status == 200

    reply = await api.act(ticket["id"], "dispatch")

    assert reply.status == 200, reply.body
    assert reply.body["event"]["details"]["bypass"] is False
    assert reply.body["ticket"]["assignment"]["technician_id"] == "tech-1"


# --- hold, resume and notes -----------------------------------------------------------------


async def test_hold_and_resume_return_the_ticket_to_its_previous_state(api: Api) -> None:
    ticket = await api.create_ticket()
    assert (await api.act(ticket["id"], "schedule", WINDOW)).status == 200

    held = await api.act(ticket["id"], "hold", {"cause": "customer", "reason": "not at home"})

    assert held.status == 200, held.body
    assert held.body["ticket"]["state"] == "ON_HOLD"
    assert held.body["ticket"]["hold"] == {"cause": "customer", "previous_state": "SCHEDULED"}
    assert held.body["ticket"]["allowed_actions"] == [
        "attach_evidence",
        "cancel",
        "contact_attempt",
        "escalate",
        "mitigate",
        "resume",
        "update",
    ]
    assert held.body["event"]["details"]["cause"] == "customer"
    assert held.body["event"]["reason"] == "not at home"

    resumed = await api.act(ticket["id"], "resume", {"reason": "customer is back"})

    assert resumed.status == 200, resumed.body
    after = await get_ticket(api, ticket["id"])
    assert after["state"] == "SCHEDULED"
    assert after["hold"] is None
    assert after["assignment"]["technician_id"] == "tech-1"
    assert [e["type"] for e in await api.timeline(ticket["id"])][-2:] == ["held", "resumed"]
    assert resumed.body["event"]["to_state"] == "SCHEDULED"


async def test_notes_are_timeline_events_with_their_details_and_keep_the_state(api: Api) -> None:
    ticket = await api.create_ticket(priority="P1")
    tid = ticket["id"]

    contact = await api.act(
        tid, "contact-attempts", {"channel": "sms", "outcome": "left_message", "reason": "eta"}
    )
    escalation = await api.act(
        tid, "escalations", {"level": "manager", "reason": "no technician free"}
    )
    mitigation = await api.act(
        tid, "mitigations", {"action": "customer told to shut the main valve"}
    )

    for reply in (contact, escalation, mitigation):
        assert reply.status == 200, reply.body
        assert reply.body["ticket"]["state"] == "READY_TO_SCHEDULE"
    events = await api.timeline(tid)
    assert [(e["type"], e["from_state"], e["to_state"]) for e in events[1:]] == [
        ("contact_attempt", "READY_TO_SCHEDULE", "READY_TO_SCHEDULE"),
        ("escalation", "READY_TO_SCHEDULE", "READY_TO_SCHEDULE"),
        ("mitigation", "READY_TO_SCHEDULE", "READY_TO_SCHEDULE"),
    ]
    assert events[1]["details"] == {"channel": "sms", "outcome": "left_message"}
    assert events[1]["reason"] == "eta"
    assert events[2]["details"] == {"level": "manager"}
    assert events[2]["reason"] == "no technician free"
    assert events[3]["details"] == {"action": "customer told to shut the main valve"}
    assert (await get_ticket(api, tid))["state"] == "READY_TO_SCHEDULE"


async def test_notes_are_accepted_on_a_closed_ticket(api: Api) -> None:
    ticket = await api.create_ticket()
    assert (await api.act(ticket["id"], "cancel", {"reason": "duplicate"})).status == 200

    reply = await api.act(ticket["id"], "escalations", {"reason": "customer disputes the cancel"})

    assert reply.status == 200, reply.body
    assert reply.body["ticket"]["state"] == "CANCELLED"


# --- who and under which ids ----------------------------------------------------------------

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
GATEWAY_ACTOR = {
    "X-Actor-Type": "agent",
    "X-Actor-Id": "triage-agent",
    "X-Actor-Role": "dispatcher",
    "X-Tool-Name": "ticket.create",
}


async def test_a_gateway_stamps_events_with_the_request_correlation_and_trace_ids_it_relays(
    api: Api,
) -> None:
    reply = await api.request(
        "POST",
        "/v1/tickets",
        json=COMPLETE_TICKET,
        as_="gateway",
        key="create-key-1",
        headers={
            **GATEWAY_ACTOR,
            "X-Request-ID": "req-1",
            "X-Correlation-ID": "corr-1",
            "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01",
        },
    )

    assert reply.status == 201, reply.body
    event = (await api.timeline(reply.body["ticket"]["id"]))[0]
    assert (event["actor_type"], event["actor_id"], event["role"]) == (
        "agent",
        "triage-agent",
        "dispatcher",
    )
    assert event["request_id"] == "req-1"
    assert event["correlation_id"] == "corr-1"
    assert event["trace_id"] == TRACE_ID
    assert reply.headers["X-Request-ID"] == "req-1"
    assert reply.headers["X-Correlation-ID"] == "corr-1"


async def test_a_human_cannot_stamp_its_event_with_another_calls_ids(
    api: Api, spans: InMemorySpanExporter, log_lines: list[bytes]
) -> None:
    # The ids of an agent's call, as the timeline shows them to anyone who may read it.
    relayed = await api.request(
        "POST",
        "/v1/tickets",
        json=COMPLETE_TICKET,
        as_="gateway",
        headers={
            **GATEWAY_ACTOR,
            "X-Request-ID": "agent-call-1",
            "X-Correlation-ID": "agent-corr-1",
            "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01",
        },
    )
    ticket_id = relayed.body["ticket"]["id"]
    forged = {
        "X-Request-ID": "agent-call-1",
        "X-Correlation-ID": "agent-corr-1",
        "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01",
    }
    spans.clear()

    first = await api.act(
        ticket_id, "escalations", {"reason": "x"}, as_="dispatcher", key="k-7", headers=forged
    )
    again = await api.act(
        ticket_id, "escalations", {"reason": "x"}, as_="dispatcher", key="k-7", headers=forged
    )

    assert first.status == again.status == 200, first.body
    created, escalated = await api.timeline(ticket_id)
    assert (created["request_id"], created["correlation_id"]) == ("agent-call-1", "agent-corr-1")
    assert escalated["actor_id"] == "disp-1"
    assert escalated["request_id"] not in ("agent-call-1", "k-7")
    assert escalated["correlation_id"] != "agent-corr-1"
    assert escalated["trace_id"] not in (TRACE_ID, None)
    # Minted once, kept on the retry (the key's replay), and what the answer says.
    assert again.body["event"]["request_id"] == escalated["request_id"]
    assert first.headers["X-Request-ID"] == escalated["request_id"]
    assert first.headers["X-Correlation-ID"] == escalated["correlation_id"]
    # The caller's trace still finds the work, through a link.
    own = [s for s in spans.get_finished_spans() if s.links]
    assert own
    assert format(own[0].context.trace_id, "032x") == escalated["trace_id"]
    assert format(own[0].links[0].context.trace_id, "032x") == TRACE_ID
    # The claim is kept in the log line, not as the call's identity.
    line = next(
        orjson.loads(raw) for raw in log_lines if b'"claimed_request_id":"agent-call-1"' in raw
    )
    assert line["request_id"] == escalated["request_id"]


async def test_another_principals_same_idempotency_key_gets_another_request_id(
    api: Api,
) -> None:
    ticket = await api.create_ticket()

    mine = await api.act(ticket["id"], "escalations", {"reason": "x"}, key="shared-key")
    theirs = await api.act(
        ticket["id"], "escalations", {"reason": "x"}, as_="dispatcher", key="shared-key"
    )

    assert mine.status == theirs.status == 200
    assert mine.body["event"]["request_id"] != theirs.body["event"]["request_id"]
    uuid.UUID(mine.body["event"]["request_id"])


async def test_without_x_request_id_the_gateways_idempotency_key_is_the_request_id(
    api: Api,
) -> None:
    ticket = await api.create_ticket()

    reply = await api.act(
        ticket["id"],
        "escalations",
        {"reason": "x"},
        as_="gateway",
        key="escalate-key-7",
        headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7"},  # no flags: invalid
    )

    assert reply.status == 200, reply.body
    event = (await api.timeline(ticket["id"]))[-1]
    assert event["request_id"] == "escalate-key-7"
    assert reply.headers["X-Request-ID"] == "escalate-key-7"
    assert event["trace_id"] != TRACE_ID  # the invalid traceparent started a fresh trace
    assert event["correlation_id"] == reply.headers["X-Correlation-ID"]


async def test_an_invalid_traceparent_starts_a_fresh_trace(api: Api) -> None:
    ticket = await api.create_ticket()
    for traceparent in (
        f"00-{'0' * 32}-00f067aa0ba902b7-01",
        f"00-{TRACE_ID.upper()}-00f067aa0ba902b7-01",
        "garbage",
    ):
        reply = await api.act(
            ticket["id"], "mitigations", {"action": "x"}, headers={"traceparent": traceparent}
        )
        assert reply.status == 200, reply.body
        trace_id = reply.body["event"]["trace_id"]
        assert re.fullmatch("[0-9a-f]{32}", trace_id), traceparent
        assert trace_id not in (TRACE_ID, "0" * 32), traceparent


async def test_a_future_traceparent_version_is_read_leniently(api: Api) -> None:
    ticket = await api.create_ticket()

    reply = await api.act(
        ticket["id"],
        "mitigations",
        {"action": "x"},
        as_="gateway",
        headers={"traceparent": f"01-{TRACE_ID}-00f067aa0ba902b7-01"},
    )

    assert reply.body["event"]["trace_id"] == TRACE_ID


async def test_a_gateway_records_the_agent_it_asserts(api: Api) -> None:
    reply = await api.request(
        "POST",
        "/v1/tickets",
        json=COMPLETE_TICKET,
        as_="gateway",
        headers={
            "X-Actor-Type": "agent",
            "X-Actor-Id": "triage-agent",
            "X-Actor-Role": "dispatcher",
            "X-Tool-Name": "create_ticket",
        },
    )

    assert reply.status == 201, reply.body
    event = reply.body["event"]
    assert (event["actor_type"], event["actor_id"], event["role"], event["tool_name"]) == (
        "agent",
        "triage-agent",
        "dispatcher",
        "create_ticket",
    )
    stored = (await api.timeline(reply.body["ticket"]["id"]))[0]
    assert stored == event


async def test_every_response_echoes_the_correlation_id_and_the_request_id(api: Api) -> None:
    sent = await api.request(
        "GET",
        "/v1/tickets",
        as_="gateway",
        headers={"X-Correlation-ID": "corr-9", "X-Request-ID": "req-9"},
    )
    assert sent.headers["X-Correlation-ID"] == "corr-9"
    assert sent.headers["X-Request-ID"] == "req-9"

    minted = await api.request("GET", "/v1/tickets")
    uuid.UUID(minted.headers["X-Correlation-ID"])
    uuid.UUID(minted.headers["X-Request-ID"])

    error = await api.request(
        "GET", f"/v1/tickets/{uuid.uuid4()}", as_="gateway", headers={"X-Request-ID": "r"}
    )
    assert error.status == 404
    assert error.headers["X-Request-ID"] == "r"
    uuid.UUID(error.headers["X-Correlation-ID"])

    health = await api.request("GET", "/healthz", as_="", headers={"X-Correlation-ID": "h-1"})
    assert health.status == 200
    assert health.headers["X-Correlation-ID"] == "h-1"
    uuid.UUID(health.headers["X-Request-ID"])

    unauthenticated = await api.request(
        "GET", "/v1/tickets", as_="", headers={"X-Request-ID": "req-401"}
    )
    assert unauthenticated.status == 401
    assert unauthenticated.headers["X-Request-ID"] == "req-401"
    uuid.UUID(unauthenticated.headers["X-Correlation-ID"])

    refused = await api.request("GET", "/v1/tickets", headers={"X-Request-ID": "not safe"})
    assert refused.status == 400
    uuid.UUID(refused.headers["X-Request-ID"])  # an unsafe id is replaced, never echoed


async def test_the_timeline_is_append_only_in_the_database(api: Api) -> None:
    ticket = await api.create_ticket()
    conn = await connect(api.database_url)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute("UPDATE timeline_events SET reason = 'rewritten'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute("DELETE FROM timeline_events")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute("TRUNCATE timeline_events CASCADE")
    finally:
        await conn.close()

    events = await api.timeline(ticket["id"])
    assert [(e["seq"], e["type"], e["reason"]) for e in events] == [(1, "created", None)]


async def test_a_patch_carrying_only_a_reason_is_refused_and_records_nothing(api: Api) -> None:
    ticket = await api.create_ticket()

    reply = await api.request("PATCH", f"/v1/tickets/{ticket['id']}", json={"reason": "tidy"})

    assert reply.status == 422
    assert reply.body["code"] == "validation_failed"
    assert [e["type"] for e in await api.timeline(ticket["id"])] == ["created"]


async def test_a_full_timeline_page_points_to_a_next_page_only_when_there_is_one(api: Api) -> None:
    ticket = await api.create_ticket()
    await api.act(ticket["id"], "schedule", WINDOW)
    path = f"/v1/tickets/{ticket['id']}/timeline"

    exact = await api.request("GET", f"{path}?limit=2")
    short = await api.request("GET", f"{path}?limit=1")

    assert exact.body["next_after_seq"] is None
    assert short.body["next_after_seq"] == 1
