"""The tool schemas: valid Draft 2020-12, closed, exemplified, self-contained, and true to
what dispatch-api really answers."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from dispatch_api.domain import EvidenceKind, EvidenceSummary, HoldCause, Priority, State, Ticket
from dispatch_api.service import event_view, evidence_view, technician_view, ticket_view
from dispatch_api.store import Event, EvidenceRecord, TicketRecord
from schemas import Validator
from tools import Tool, ToolError, catalog

TOOLS = catalog()
BY_NAME = {t.name: t for t in TOOLS}
MCP_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
ALIAS = re.compile(r"[a-zA-Z0-9_-]{1,64}")
TICKET_TOOLS = [t for t in TOOLS if t.ticket_argument is not None]
OPTIONAL = [
    (t, name)
    for t in TOOLS
    for name in t.input_schema["properties"]
    if name not in t.input_schema.get("required", [])
]
REQUIRED = [(t, name) for t in TOOLS for name in t.input_schema.get("required", [])]


def _name(value: object) -> str:
    return value.name if isinstance(value, Tool) else str(value)


each_tool = pytest.mark.parametrize("tool", TOOLS, ids=_name)


def _errors(schema: dict[str, Any], instance: Any) -> list[str]:
    """Every violation, with formats checked too (MCP clients may check them)."""
    validator = Validator(schema, format_checker=Validator.FORMAT_CHECKER)
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(instance)]


def _required_part(tool: Tool) -> dict[str, Any]:
    """The required arguments of the tool's first example: a minimal valid call."""
    required = tool.input_schema.get("required", [])
    example: dict[str, Any] = tool.input_schema["examples"][0]
    return {k: v for k, v in example.items() if k in required}


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    """Follow a local JSON pointer (`#/a/b`), raising KeyError when it leads nowhere."""
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


# ---- the schemas themselves -------------------------------------------------------------


@each_tool
def test_every_input_and_output_schema_is_valid_draft_2020_12(tool: Tool) -> None:
    Validator.check_schema(tool.input_schema)
    Validator.check_schema(tool.output_schema)
    assert tool.input_schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@each_tool
def test_every_input_schema_is_a_closed_object(tool: Tool) -> None:
    schema = tool.input_schema

    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert isinstance(schema["properties"], dict)
    assert set(schema.get("required", [])) <= set(schema["properties"])


@each_tool
def test_every_property_is_described_for_the_model(tool: Tool) -> None:
    undescribed = [
        name
        for name, prop in tool.input_schema["properties"].items()
        if not prop.get("description")
    ]

    assert undescribed == []


@each_tool
def test_every_input_example_is_accepted(tool: Tool) -> None:
    examples = tool.input_schema["examples"]

    assert examples, "every tool shows the model at least one example"
    for example in examples:
        assert _errors(tool.input_schema, example) == []
        tool.validator.validate(example)


@pytest.mark.parametrize(("tool", "name"), OPTIONAL, ids=_name)
def test_every_optional_property_accepts_null(tool: Tool, name: str) -> None:
    tool.validator.validate({**_required_part(tool), name: None})


@pytest.mark.parametrize(("tool", "name"), REQUIRED, ids=_name)
def test_required_properties_refuse_null(tool: Tool, name: str) -> None:
    with pytest.raises(ToolError) as caught:
        tool.validator.validate({**_required_part(tool), name: None})

    assert {e["path"] for e in caught.value.details["errors"]} == {f"/{name}"}


@pytest.mark.parametrize(
    "ticket_id",
    [
        "not-a-uuid",
        "7c9e6679742540de944be07fc1f90ae7",
        "7c9e6679-7425-40de-944b-e07fc1f90ae",
        "7c9e6679-7425-40de-944b-e07fc1f90ae7\n",
        " 7c9e6679-7425-40de-944b-e07fc1f90ae7",
    ],
    ids=["words", "no-dashes", "short", "trailing-newline", "leading-space"],
)
@pytest.mark.parametrize("tool", TICKET_TOOLS, ids=_name)
def test_ticket_tools_refuse_a_ticket_id_that_is_not_exactly_a_uuid(
    tool: Tool, ticket_id: str
) -> None:
    with pytest.raises(ToolError) as caught:
        tool.validator.validate({**_required_part(tool), "ticket_id": ticket_id})

    assert caught.value.code == "invalid_arguments"
    assert [e["path"] for e in caught.value.details["errors"]] == ["/ticket_id"]


@pytest.mark.parametrize("tool", TICKET_TOOLS, ids=_name)
def test_ticket_tools_accept_an_upper_case_uuid(tool: Tool) -> None:
    tool.validator.validate(
        {**_required_part(tool), "ticket_id": "7C9E6679-7425-40DE-944B-E07FC1F90AE7"}
    )


def test_the_tools_taking_a_ticket_id_are_the_ticket_scoped_ones() -> None:
    assert {t.name for t in TOOLS if t.ticket_argument is None} == {
        "ticket.create",
        "queue.view",
        "technician.list",
        "sla.status",
        "approval.status",
    }


@each_tool
def test_output_schemas_are_self_contained(tool: Tool) -> None:
    refs = list(_refs(tool.output_schema))

    assert [r for r in refs if not r.startswith("#/")] == []
    for ref in refs:
        _resolve(tool.output_schema, ref)  # KeyError when it does not resolve
    defs = tool.output_schema.get("$defs", {})
    assert {r.removeprefix("#/$defs/") for r in refs if r.startswith("#/$defs/")} <= set(defs)


@each_tool
def test_input_schemas_refer_to_nothing(tool: Tool) -> None:
    assert list(_refs(tool.input_schema)) == []


# ---- names ------------------------------------------------------------------------------


def test_tool_names_are_unique_and_follow_the_mcp_name_rule() -> None:
    names = [t.name for t in TOOLS]

    assert len(names) == len(set(names))
    assert [n for n in names if not MCP_NAME.fullmatch(n)] == []


def test_aliases_are_unique_and_follow_the_openai_name_rule() -> None:
    aliases = [t.alias for t in TOOLS]

    assert len(aliases) == len(set(aliases))
    assert [a for a in aliases if not ALIAS.fullmatch(a)] == []
    assert BY_NAME["tech.complete"].alias == "tech_complete"


def test_no_alias_is_the_name_of_another_tool() -> None:
    """Invocation accepts both names, so neither may point at two tools."""
    owners: dict[str, set[str]] = {}
    for tool in TOOLS:
        for name in (tool.name, tool.alias):
            owners.setdefault(name, set()).add(tool.name)

    assert {n: o for n, o in owners.items() if len(o) > 1} == {}


# ---- realistic outputs ------------------------------------------------------------------

TICKET_ID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
CREATED = datetime(2026, 11, 27, 9, 12, tzinfo=UTC)
NOW = datetime(2026, 11, 27, 14, 12, 5, 123456, tzinfo=UTC)
WINDOW_START = datetime(2026, 11, 27, 14, 0, tzinfo=timezone(timedelta(hours=-5)))
COMPLETE = Ticket(
    id=TICKET_ID,
    state=State.READY_TO_SCHEDULE,
    priority=Priority.P2,
    customer_name="Maria Lopez",
    contact_phone="+1 415-555-0134",
    contact_email="maria.lopez@example.com",
    site_address="221 Baker Street, Apt 4B, Springfield, IL 62701",
    incident_type="water_leak",
    description="Water dripping from the kitchen ceiling since this morning.",
)
INLINE_NOTE = EvidenceRecord(
    id="0f8fad5b-d9cb-469f-a165-70867728950e",
    kind=EvidenceKind.NOTE,
    tag=None,
    content_type="text/plain",
    size_bytes=42,
    sha256="9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    uri=None,
    stored_inline=True,
    description=None,
    captured_by_type="agent",
    captured_by_id="tech-1",
    captured_by_role="technician",
    captured_at=NOW,
    request_id=None,
)
REFERENCED_PHOTO = EvidenceRecord(
    id="b3e1c1a2-5d4f-4e8a-9c6b-2f1d3e4a5b6c",
    kind=EvidenceKind.PHOTO,
    tag="before",
    content_type="image/jpeg",
    size_bytes=482133,
    sha256="3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b",
    uri="s3://field-evidence/tickets/7c9e6679/before-1.jpg",
    stored_inline=False,
    description="Ceiling stain above the kitchen sink before repair.",
    captured_by_type="agent",
    captured_by_id="tech-1",
    captured_by_role="technician",
    captured_at=NOW,
    request_id="5b0e2c4e-8a1d-4b6f-9e3a-2c7d1f0a9b8e",
)


def _record(ticket: Ticket, *evidence: EvidenceRecord, seq: int = 4) -> TicketRecord:
    summaries = tuple(EvidenceSummary(e.kind, e.tag) for e in evidence)
    return TicketRecord(
        ticket=Ticket(**{**_fields(ticket), "evidence": summaries}),
        created_at=CREATED,
        updated_at=NOW,
        state_entered_at=NOW,
        last_seq=seq,
        evidence=evidence,
    )


def _fields(ticket: Ticket) -> dict[str, Any]:
    return {name: getattr(ticket, name) for name in Ticket.__dataclass_fields__}


def _with(ticket: Ticket, **changes: Any) -> Ticket:
    return Ticket(**{**_fields(ticket), **changes})


NEW = _record(Ticket(id=TICKET_ID, state=State.NEW, customer_name="Harbor Cafe"), seq=1)
READY = _record(COMPLETE, seq=2)
SCHEDULED = _record(
    _with(
        COMPLETE,
        state=State.SCHEDULED,
        technician_id="tech-042",
        window_start=WINDOW_START,
        window_end=WINDOW_START + timedelta(hours=2),
    ),
    seq=3,
)
#: An emergency bypass assigns a technician without an arrival window.
BYPASS_DISPATCHED = _record(
    _with(COMPLETE, state=State.DISPATCHED, priority=Priority.P1, technician_id="tech-007")
)
ON_SITE = _record(
    _with(SCHEDULED.ticket, state=State.ON_SITE), REFERENCED_PHOTO, INLINE_NOTE, seq=6
)
ON_HOLD = _record(
    _with(
        SCHEDULED.ticket,
        state=State.ON_HOLD,
        state_before_hold=State.SCHEDULED,
        hold_cause=HoldCause.CUSTOMER,
    )
)
COMPLETED = _record(_with(ON_SITE.ticket, state=State.COMPLETED), REFERENCED_PHOTO, seq=8)
CANCELLED = _record(_with(NEW.ticket, state=State.CANCELLED), seq=2)
TECHNICIAN = {
    "id": "tech-042",
    "name": "Sam Okafor",
    "skills": ["water_leak", "no_heat"],
    "active": True,
    "region": "north",
    "hours": {"days": [1, 2, 3, 4, 5], "start": "08:00", "end": "17:00", "tz": "Europe/London"},
    "created_at": CREATED,
    "updated_at": NOW,
}
RECORDS = [NEW, READY, SCHEDULED, BYPASS_DISPATCHED, ON_SITE, ON_HOLD, COMPLETED, CANCELLED]


def _event(
    seq: int,
    type_: str,
    from_state: str | None,
    to_state: str | None,
    details: dict[str, Any],
    *,
    tool: str | None = None,
) -> Event:
    return Event(
        ticket_id=TICKET_ID,
        seq=seq,
        at=NOW,
        type=type_,
        from_state=from_state,
        to_state=to_state,
        reason="Customer confirmed the 14:00 slot by phone." if seq % 2 else None,
        actor_type="agent",
        actor_id="agent-disp",
        role="dispatcher",
        tool_name=tool,
        request_id="4d3c2b1a-0f9e-4d8c-b7a6-958473625140" if tool else None,
        correlation_id="corr-17" if tool else None,
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736" if tool else None,
        details=details,
    )


CREATED_EVENT = _event(
    1, "created", None, "NEW", {"missing_fields": ["contact"]}, tool="ticket.create"
)
REJECTED_EVENT = _event(
    7,
    "completion_rejected",
    "ON_SITE",
    "ON_SITE",
    {
        "action": "complete",
        "code": "evidence_missing",
        "missing_evidence": [{"kind": "photo", "tag": "after", "description": "After repair"}],
    },
    tool="tech.complete",
)
EVIDENCE_EVENT = _event(
    5,
    "evidence_attached",
    "ON_SITE",
    "ON_SITE",
    {"evidence_id": REFERENCED_PHOTO.id, "kind": "photo", "tag": "before"},
)
EVENTS = [CREATED_EVENT, EVIDENCE_EVENT, REJECTED_EVENT]

#: For each action tool, the ticket as the action leaves it and the event it appends.
ACTION_RESULTS: dict[str, tuple[TicketRecord, Event]] = {
    "ticket.create": (NEW, CREATED_EVENT),
    "ticket.update": (READY, _event(2, "updated", "NEW", "READY_TO_SCHEDULE", {})),
    "ticket.schedule": (SCHEDULED, _event(3, "scheduled", "READY_TO_SCHEDULE", "SCHEDULED", {})),
    "ticket.dispatch": (
        BYPASS_DISPATCHED,
        _event(
            4,
            "dispatched",
            "READY_TO_SCHEDULE",
            "DISPATCHED",
            {"bypass": True, "bypass_reason": "Gas smell reported."},
            tool="ticket.dispatch",
        ),
    ),
    "tech.arrive": (ON_SITE, _event(5, "arrived", "DISPATCHED", "ON_SITE", {})),
    "tech.complete": (COMPLETED, _event(8, "completed", "ON_SITE", "COMPLETED", {})),
    "ticket.hold": (ON_HOLD, _event(4, "held", "SCHEDULED", "ON_HOLD", {"cause": "customer"})),
    "ticket.resume": (SCHEDULED, _event(5, "resumed", "ON_HOLD", "SCHEDULED", {})),
    "ticket.cancel": (CANCELLED, _event(2, "cancelled", "NEW", "CANCELLED", {})),
    "customer.follow_up": (
        NEW,
        _event(2, "contact_attempt", "NEW", "NEW", {"channel": "sms", "outcome": "no_answer"}),
    ),
    "ticket.escalate": (
        ON_SITE,
        _event(7, "escalation", "ON_SITE", "ON_SITE", {"level": "manager"}),
    ),
    "mitigation.record": (
        ON_SITE,
        _event(7, "mitigation", "ON_SITE", "ON_SITE", {"action": "water main shut off"}),
    ),
}


#: An executed approval as the contract of issue 18 shows it (dispatch-api's view).
APPROVAL_VIEW: dict[str, Any] = {
    "id": "0b5f3c4e-2d1a-4f6b-9c8d-7e6f5a4b3c2d",
    "status": "executed",
    "tool": "ticket.cancel",
    "action": "cancel",
    "ticket_id": TICKET_ID,
    "ticket_version": 3,
    "ticket_state": "SCHEDULED",
    "ticket_priority": "P2",
    "arguments": {"reason": "duplicate"},
    "arguments_sha256": "ab" * 32,
    "request_id": "5a0c8d0e-3b1f-5c2d-8e9f-0a1b2c3d4e5f",
    "requested_by": {"type": "agent", "id": "agent-disp", "role": "dispatcher"},
    "rule": "cancel",
    "rule_version": "0123456789ab",
    "approvers": ["supervisor", "dispatcher"],
    "requested_at": "2026-11-27T09:00:00Z",
    "expires_at": "2026-11-27T10:00:00Z",
    "decided_at": "2026-11-27T09:05:00Z",
    "decided_by": {"id": "sup-1", "role": "supervisor"},
    "reason": "confirmed with the customer",
    "result": {"status": 200, "body": {"ticket": {}, "event": {}}},
}


def _realistic_output(tool: str) -> dict[str, Any]:
    """What the tool's handler returns: dispatch-api's body, built by its own views."""
    if tool in ACTION_RESULTS:
        record, event = ACTION_RESULTS[tool]
        return {"ticket": ticket_view(record), "event": event_view(event)}
    match tool:
        case "ticket.get":
            return {"ticket": ticket_view(ON_SITE)}
        case "ticket.timeline":
            return {
                "ticket_id": TICKET_ID,
                "events": [event_view(e) for e in EVENTS],
                "next_after_seq": 7,
            }
        case "queue.view":
            return {"items": [ticket_view(r) for r in RECORDS], "next_cursor": "WyIyMDI2Il0"}
        case "technician.list":
            return {
                "items": [technician_view(TECHNICIAN), {**technician_view(TECHNICIAN), "id": "t2"}],
                "next_cursor": "dDI",
            }
        case "approval.status":
            return {"approval": APPROVAL_VIEW}
        case "evidence.attach":
            return {
                "ticket": ticket_view(ON_SITE),
                "event": event_view(EVIDENCE_EVENT),
                "evidence": evidence_view(REFERENCED_PHOTO, TICKET_ID),
            }
    raise AssertionError(f"no realistic output for {tool}: add one to this test")


CLIENT_TOOLS = [t for t in TOOLS if t.name != "sla.status"]


@pytest.mark.parametrize("tool", CLIENT_TOOLS, ids=_name)
def test_what_dispatch_api_answers_conforms_to_the_output_schema(tool: Tool) -> None:
    assert _errors(tool.output_schema, _realistic_output(tool.name)) == []


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: str(r.ticket.state))
def test_a_ticket_in_every_state_conforms_to_the_ticket_get_schema(record: TicketRecord) -> None:
    assert _errors(BY_NAME["ticket.get"].output_schema, {"ticket": ticket_view(record)}) == []


def test_the_last_page_of_a_queue_or_timeline_conforms_too() -> None:
    empty_queue: dict[str, Any] = {"items": [], "next_cursor": None}
    last_timeline: dict[str, Any] = {"ticket_id": TICKET_ID, "events": [], "next_after_seq": None}

    assert _errors(BY_NAME["queue.view"].output_schema, empty_queue) == []
    assert _errors(BY_NAME["ticket.timeline"].output_schema, last_timeline) == []


@pytest.mark.parametrize(
    ("tool", "spoil", "where"),
    [
        ("ticket.get", lambda o: o["ticket"].update(state="REOPENED"), "$.ticket.state"),
        ("ticket.hold", lambda o: o.pop("event"), "$"),
        ("ticket.get", lambda o: o["ticket"].update(last_event_seq=0), "$.ticket.last_event_seq"),
        (
            "evidence.attach",
            lambda o: o["evidence"].update(sha256="3A7B"),
            "$.evidence.sha256",
        ),
        ("ticket.timeline", lambda o: o["events"][0].update(role="admin"), "$.events[0].role"),
        ("ticket.get", lambda o: o["ticket"].update(created_at="yesterday"), "$.ticket.created_at"),
    ],
    ids=["unknown-state", "no-event", "seq-zero", "bad-digest", "unknown-role", "bad-time"],
)
def test_output_schemas_refuse_what_dispatch_api_never_answers(
    tool: str, spoil: Callable[[dict[str, Any]], object], where: str
) -> None:
    output = _realistic_output(tool)
    spoil(output)

    errors = _errors(BY_NAME[tool].output_schema, output)

    assert len(errors) == 1
    assert errors[0].startswith(f"{where}: ")
