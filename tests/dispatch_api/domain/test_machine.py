"""The ticket state machine: every state x command pair, create, update and allowed actions.

The expected outcomes below are written out by hand from DESIGN section 4; they deliberately
do not reuse `SOURCE_STATES` or `TRANSITIONS`, so a wrong rule in the code cannot hide behind
an equally wrong expectation derived from it.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from dispatch_api.domain import (
    TRANSITIONS,
    Accepted,
    Action,
    Arrive,
    AttachEvidence,
    Cancel,
    Command,
    Complete,
    Decision,
    Dispatch,
    EvidenceKind,
    EvidenceRequirement,
    EvidenceSummary,
    Hold,
    HoldCause,
    IncidentTemplate,
    Note,
    Priority,
    Rejected,
    Resume,
    Schedule,
    State,
    Ticket,
    Update,
    allowed_actions,
    allowed_tools,
    create,
    decide,
)

WINDOW_START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
WINDOW_END = datetime(2026, 3, 2, 11, 0, tzinfo=UTC)

BEFORE = EvidenceSummary(EvidenceKind.PHOTO, "before")
AFTER = EvidenceSummary(EvidenceKind.PHOTO, "after")
SIGNATURE = EvidenceSummary(EvidenceKind.SIGNATURE, "customer")

WATER_LEAK = IncidentTemplate(
    "water_leak",
    "Water leak",
    (
        EvidenceRequirement(EvidenceKind.PHOTO, "before", "Photo of the leak before work starts"),
        EvidenceRequirement(EvidenceKind.PHOTO, "after", "Photo of the repaired area"),
        EvidenceRequirement(EvidenceKind.SIGNATURE, "customer", "Customer signature"),
    ),
)

COMPLETE_FIELDS: dict[str, Any] = {
    "customer_name": "Ada Lovelace",
    "contact_phone": "+44 20 7946 0000",
    "contact_email": "ada@example.org",
    "site_address": "1 Analytical Row, London",
    "incident_type": "water_leak",
    "priority": "P2",
}

# Three-letter aliases keep the outcome table below aligned and readable.
NEW = State.NEW
RTS = State.READY_TO_SCHEDULE
SCH = State.SCHEDULED
DIS = State.DISPATCHED
ONS = State.ON_SITE
HLD = State.ON_HOLD
CMP = State.COMPLETED
CNL = State.CANCELLED

#: The column order of every row of EXPECTED.
COLUMNS: tuple[State, ...] = (NEW, RTS, SCH, DIS, ONS, HLD, CMP, CNL)

#: The state an ON_HOLD ticket in these tests was held from.
HELD_FROM = SCH


@dataclass(frozen=True, slots=True)
class Refused:
    """An expected rejection, by its stable code."""

    code: str


BAD = Refused("invalid_transition")
BYP = Refused("bypass_reason_required")
EVD = Refused("evidence_missing")

Outcome = State | Refused


@dataclass(frozen=True, slots=True)
class Case:
    """A command, and the ticket priority and evidence it is tried against."""

    command: Command
    priority: Priority = Priority.P2
    evidence: tuple[EvidenceSummary, ...] = ()


CASES: dict[str, Case] = {
    "update": Case(Update(fields={"description": "water under the sink"})),
    "schedule": Case(Schedule("tech-9", WINDOW_START, WINDOW_END)),
    "dispatch": Case(Dispatch()),
    "dispatch_p1_bypass": Case(
        Dispatch(technician_id="tech-9", bypass_reason="gas smell reported"), Priority.P1
    ),
    "dispatch_p1_bypass_without_reason": Case(Dispatch(technician_id="tech-9"), Priority.P1),
    "dispatch_p2_with_bypass_reason": Case(
        Dispatch(technician_id="tech-9", bypass_reason="customer is upset"), Priority.P2
    ),
    "arrive": Case(Arrive()),
    "complete_with_all_evidence": Case(Complete(), evidence=(BEFORE, AFTER, SIGNATURE)),
    "complete_with_after_photo_missing": Case(Complete(), evidence=(BEFORE, SIGNATURE)),
    "hold_customer": Case(Hold(HoldCause.CUSTOMER, "customer not home")),
    "hold_provider": Case(Hold(HoldCause.PROVIDER, "part on order")),
    "resume": Case(Resume()),
    "cancel": Case(Cancel("duplicate ticket")),
    "attach_evidence": Case(AttachEvidence(EvidenceKind.PHOTO, "before")),
    "contact_attempt": Case(Note(Action.CONTACT_ATTEMPT, "called, voicemail")),
    "escalate": Case(Note(Action.ESCALATE, "SLA at risk")),
    "mitigate": Case(Note(Action.MITIGATE, "water shut off remotely")),
}

# fmt: off
#: Accepted -> the state the ticket lands in; Refused -> the rejection code.
#: Columns:                               NEW  RTS  SCH  DIS  ONS  HLD        CMP  CNL
EXPECTED: dict[str, tuple[Outcome, ...]] = {
    "update":                            (NEW, RTS, SCH, DIS, ONS, HLD,       BAD, BAD),
    "schedule":                          (BAD, SCH, SCH, BAD, BAD, BAD,       BAD, BAD),
    "dispatch":                          (BAD, BAD, DIS, BAD, BAD, BAD,       BAD, BAD),
    "dispatch_p1_bypass":                (BAD, DIS, DIS, BAD, BAD, BAD,       BAD, BAD),
    "dispatch_p1_bypass_without_reason": (BAD, BYP, DIS, BAD, BAD, BAD,       BAD, BAD),
    "dispatch_p2_with_bypass_reason":    (BAD, BAD, DIS, BAD, BAD, BAD,       BAD, BAD),
    "arrive":                            (BAD, BAD, BAD, ONS, BAD, BAD,       BAD, BAD),
    "complete_with_all_evidence":        (BAD, BAD, BAD, BAD, CMP, BAD,       BAD, BAD),
    "complete_with_after_photo_missing": (BAD, BAD, BAD, BAD, EVD, BAD,       BAD, BAD),
    "hold_customer":                     (HLD, HLD, HLD, HLD, HLD, BAD,       BAD, BAD),
    "hold_provider":                     (HLD, HLD, HLD, HLD, HLD, BAD,       BAD, BAD),
    "resume":                            (BAD, BAD, BAD, BAD, BAD, HELD_FROM, BAD, BAD),
    "cancel":                            (CNL, CNL, CNL, CNL, CNL, CNL,       BAD, BAD),
    "attach_evidence":                   (NEW, RTS, SCH, DIS, ONS, HLD,       BAD, BAD),
    "contact_attempt":                   (NEW, RTS, SCH, DIS, ONS, HLD,       CMP, CNL),
    "escalate":                          (NEW, RTS, SCH, DIS, ONS, HLD,       CMP, CNL),
    "mitigate":                          (NEW, RTS, SCH, DIS, ONS, HLD,       CMP, CNL),
}

_NOTES = ["contact_attempt", "escalate", "mitigate"]
#: What `allowed_actions` answers per state for a P2 ticket (a P1 one adds dispatch in RTS).
ALLOWED: dict[State, list[str]] = {
    NEW: sorted(["update", "hold", "cancel", "attach_evidence", *_NOTES]),
    RTS: sorted(["update", "schedule", "hold", "cancel", "attach_evidence", *_NOTES]),
    SCH: sorted(["update", "schedule", "dispatch", "hold", "cancel", "attach_evidence", *_NOTES]),
    DIS: sorted(["update", "arrive", "hold", "cancel", "attach_evidence", *_NOTES]),
    ONS: sorted(["update", "complete", "hold", "cancel", "attach_evidence", *_NOTES]),
    HLD: sorted(["update", "resume", "cancel", "attach_evidence", *_NOTES]),
    CMP: sorted(_NOTES),
    CNL: sorted(_NOTES),
}
# fmt: on

EVENT_TYPES: dict[Action, str] = {
    Action.UPDATE: "updated",
    Action.SCHEDULE: "scheduled",
    Action.DISPATCH: "dispatched",
    Action.ARRIVE: "arrived",
    Action.COMPLETE: "completed",
    Action.HOLD: "held",
    Action.RESUME: "resumed",
    Action.CANCEL: "cancelled",
    Action.ATTACH_EVIDENCE: "evidence_attached",
    Action.CONTACT_ATTEMPT: "contact_attempt",
    Action.ESCALATE: "escalation",
    Action.MITIGATE: "mitigation",
}


def allowed_for(state: State, priority: Priority) -> list[str]:
    if state is RTS and priority is Priority.P1:
        return sorted([*ALLOWED[RTS], "dispatch"])
    return ALLOWED[state]


def ticket_in(
    state: State,
    *,
    priority: Priority = Priority.P2,
    evidence: tuple[EvidenceSummary, ...] = (),
) -> Ticket:
    """A ticket in `state` whose fields are what getting there would have left behind.

    A NEW ticket still lacks its site address (otherwise it would not be NEW); tickets past
    scheduling carry a technician and a window; an ON_HOLD ticket was held from HELD_FROM.
    """
    scheduled = state not in (NEW, RTS)
    return Ticket(
        id="T-1",
        state=state,
        priority=priority,
        customer_name="Ada Lovelace",
        contact_phone="+44 20 7946 0000",
        site_address=None if state is NEW else "1 Analytical Row, London",
        incident_type="water_leak",
        technician_id="tech-7" if scheduled else None,
        window_start=WINDOW_START if scheduled else None,
        window_end=WINDOW_END if scheduled else None,
        state_before_hold=HELD_FROM if state is HLD else None,
        hold_cause=HoldCause.PROVIDER if state is HLD else None,
        evidence=evidence,
    )


def accepted(decision: Decision) -> Accepted:
    assert isinstance(decision, Accepted), decision
    return decision


def rejected(decision: Decision) -> Rejected:
    assert isinstance(decision, Rejected), decision
    return decision


# --- the full state x command table ---------------------------------------------------------


def test_the_outcome_table_covers_every_command_type_and_every_state() -> None:
    assert set(EXPECTED) == set(CASES)
    assert all(len(row) == len(State) for row in EXPECTED.values())
    assert set(COLUMNS) == set(State)
    assert {type(case.command) for case in CASES.values()} == set(typing.get_args(Command))
    assert {case.command.action for case in CASES.values()} == set(Action) - {Action.CREATE}


@pytest.mark.parametrize(
    ("case_name", "state"),
    [(name, state) for name in CASES for state in COLUMNS],
    ids=[f"{name}-{state}" for name in CASES for state in COLUMNS],
)
def test_every_command_in_every_state_has_the_outcome_the_table_states(
    case_name: str, state: State
) -> None:
    case = CASES[case_name]
    ticket = ticket_in(state, priority=case.priority, evidence=case.evidence)
    expected = EXPECTED[case_name][COLUMNS.index(state)]
    action = case.command.action

    decision = decide(ticket, case.command, WATER_LEAK)

    assert decision.action is action
    if isinstance(expected, State):
        accept = accepted(decision)
        assert accept.from_state is state
        assert accept.to_state is expected
        assert accept.event_type == EVENT_TYPES[action]
        assert (state, action, expected) in TRANSITIONS
        assert str(action) in allowed_for(state, case.priority)
    else:
        reject = rejected(decision)
        assert reject.code == expected.code
        assert reject.state is state
        if expected is EVD:
            assert reject.event_type == "completion_rejected"
        else:
            assert reject.event_type == "action_rejected"
            assert reject.details["allowed_actions"] == allowed_for(state, case.priority)
        assert reject.message
        if expected is BAD:
            assert str(action) not in reject.details["allowed_actions"]


@pytest.mark.parametrize("state", [CMP, CNL])
def test_terminal_tickets_refuse_everything_but_contact_attempts_escalations_and_mitigations(
    state: State,
) -> None:
    for case in CASES.values():
        ticket = ticket_in(state, priority=case.priority, evidence=case.evidence)
        decision = decide(ticket, case.command, WATER_LEAK)
        if isinstance(case.command, Note):
            assert accepted(decision).ticket == ticket
        else:
            assert rejected(decision).code == "invalid_transition"
            assert decision.details["allowed_actions"] == sorted(_NOTES)


# --- create ---------------------------------------------------------------------------------


def test_a_ticket_with_every_required_field_is_created_ready_to_schedule() -> None:
    decision = create("T-1", COMPLETE_FIELDS)

    assert decision.action is Action.CREATE
    assert decision.event_type == "created"
    assert decision.from_state is None
    assert decision.to_state is RTS
    assert decision.details["missing_fields"] == []
    assert decision.ticket.id == "T-1"
    assert decision.ticket.priority is Priority.P2
    assert decision.ticket.customer_name == "Ada Lovelace"
    assert (None, Action.CREATE, RTS) in TRANSITIONS


@pytest.mark.parametrize(
    ("omitted", "missing"),
    [
        (["customer_name"], ["customer_name"]),
        (["contact_phone", "contact_email"], ["contact"]),
        (["site_address"], ["site_address"]),
        (["incident_type"], ["incident_type"]),
        (["priority"], ["priority"]),
        (["customer_name", "priority"], ["customer_name", "priority"]),
    ],
)
def test_a_ticket_missing_a_required_field_is_created_new_and_names_what_is_missing(
    omitted: list[str], missing: list[str]
) -> None:
    fields = {k: v for k, v in COMPLETE_FIELDS.items() if k not in omitted}

    decision = create("T-1", fields)

    assert decision.to_state is NEW
    assert decision.details["missing_fields"] == missing
    assert decision.ticket.missing_fields == missing
    assert (None, Action.CREATE, NEW) in TRANSITIONS


def test_a_ticket_created_from_nothing_lists_every_required_field_in_a_fixed_order() -> None:
    decision = create("T-1", {})

    assert decision.to_state is NEW
    assert decision.details["missing_fields"] == [
        "customer_name",
        "contact",
        "site_address",
        "incident_type",
        "priority",
    ]


@pytest.mark.parametrize("kept", ["contact_phone", "contact_email"])
def test_either_a_phone_or_an_email_satisfies_the_contact_requirement(kept: str) -> None:
    dropped = {"contact_phone", "contact_email"} - {kept}
    fields = {k: v for k, v in COMPLETE_FIELDS.items() if k not in dropped}

    decision = create("T-1", fields)

    assert decision.to_state is RTS
    assert decision.details["missing_fields"] == []


def test_fields_given_as_none_count_as_missing_on_create() -> None:
    decision = create("T-1", {**COMPLETE_FIELDS, "site_address": None})

    assert decision.to_state is NEW
    assert decision.details["missing_fields"] == ["site_address"]


def test_a_priority_given_as_text_is_stored_as_a_priority() -> None:
    decision = create("T-1", {**COMPLETE_FIELDS, "priority": "P1"})

    assert decision.ticket.priority is Priority.P1


# --- update ---------------------------------------------------------------------------------


def test_updating_a_new_ticket_with_its_last_missing_field_makes_it_ready_to_schedule() -> None:
    ticket = create("T-1", {k: v for k, v in COMPLETE_FIELDS.items() if k != "site_address"})
    assert ticket.to_state is NEW

    decision = accepted(decide(ticket.ticket, Update(fields={"site_address": "2 Elm St"}), None))

    assert decision.from_state is NEW
    assert decision.to_state is RTS
    assert decision.ticket.site_address == "2 Elm St"
    assert decision.details == {"changed_fields": ["site_address"], "missing_fields": []}
    assert (NEW, Action.UPDATE, RTS) in TRANSITIONS


def test_updating_a_new_ticket_without_filling_every_gap_keeps_it_new() -> None:
    ticket = create("T-1", {"customer_name": "Ada"}).ticket

    decision = accepted(decide(ticket, Update(fields={"contact_email": "a@example.org"}), None))

    assert decision.to_state is NEW
    assert decision.details["missing_fields"] == ["site_address", "incident_type", "priority"]


def test_an_update_ignores_none_values_and_reports_only_the_fields_it_changed() -> None:
    ticket = ticket_in(SCH)

    decision = accepted(
        decide(ticket, Update(fields={"customer_name": None, "priority": "P1"}), None)
    )

    assert decision.to_state is SCH
    assert decision.ticket.customer_name == "Ada Lovelace"
    assert decision.ticket.priority is Priority.P1
    assert decision.details["changed_fields"] == ["priority"]


# --- schedule and dispatch ------------------------------------------------------------------


def test_scheduling_records_the_technician_and_the_time_window() -> None:
    later_start = datetime(2026, 3, 3, 13, 0, tzinfo=UTC)
    later_end = datetime(2026, 3, 3, 15, 0, tzinfo=UTC)

    decision = accepted(decide(ticket_in(SCH), Schedule("tech-9", later_start, later_end), None))

    assert decision.to_state is SCH
    assert decision.ticket.technician_id == "tech-9"
    assert decision.ticket.window_start == later_start
    assert decision.ticket.window_end == later_end


def test_dispatching_a_scheduled_ticket_keeps_its_technician_and_is_no_bypass() -> None:
    decision = accepted(decide(ticket_in(SCH), Dispatch(), None))

    assert decision.to_state is DIS
    assert decision.ticket.technician_id == "tech-7"
    assert decision.details == {"bypass": False, "technician_id": "tech-7"}


def test_dispatching_a_scheduled_ticket_to_another_technician_reassigns_it() -> None:
    decision = accepted(decide(ticket_in(SCH), Dispatch(technician_id="tech-9"), None))

    assert decision.ticket.technician_id == "tech-9"
    assert decision.details["reassigned_from"] == "tech-7"


def test_the_p1_emergency_bypass_dispatches_straight_from_ready_and_logs_its_reason() -> None:
    ticket = ticket_in(RTS, priority=Priority.P1)

    decision = accepted(
        decide(ticket, Dispatch(technician_id="tech-9", bypass_reason="gas smell"), None)
    )

    assert decision.from_state is RTS
    assert decision.to_state is DIS
    assert decision.ticket.technician_id == "tech-9"
    assert decision.details == {
        "bypass": True,
        "bypass_reason": "gas smell",
        "technician_id": "tech-9",
    }


@pytest.mark.parametrize(
    ("command", "bad_fields", "code"),
    [
        (Dispatch(technician_id="tech-9"), ["bypass_reason"], "bypass_reason_required"),
        (
            Dispatch(technician_id="tech-9", bypass_reason=""),
            ["bypass_reason"],
            "bypass_reason_required",
        ),
        (Dispatch(bypass_reason="gas smell"), ["technician_id"], "technician_required"),
        (Dispatch(), ["bypass_reason", "technician_id"], "bypass_reason_required"),
    ],
)
def test_the_p1_emergency_bypass_is_rejected_without_a_reason_and_a_technician(
    command: Dispatch, bad_fields: list[str], code: str
) -> None:
    ticket = ticket_in(RTS, priority=Priority.P1)

    decision = rejected(decide(ticket, command, None))

    assert decision.code == code
    assert decision.state is RTS
    assert [problem["field"] for problem in decision.details["invalid_fields"]] == bad_fields
    assert decision.details["allowed_actions"] == allowed_for(RTS, Priority.P1)


@pytest.mark.parametrize("priority", [Priority.P2, Priority.P3, Priority.P4])
def test_only_p1_tickets_may_skip_scheduling(priority: Priority) -> None:
    ticket = ticket_in(RTS, priority=priority)

    decision = rejected(
        decide(ticket, Dispatch(technician_id="tech-9", bypass_reason="urgent"), None)
    )

    assert decision.code == "invalid_transition"
    assert "dispatch" not in decision.details["allowed_actions"]


# --- complete -------------------------------------------------------------------------------


def test_completion_is_accepted_when_every_evidence_requirement_is_met() -> None:
    ticket = ticket_in(ONS, evidence=(SIGNATURE, AFTER, BEFORE))

    decision = accepted(decide(ticket, Complete(), WATER_LEAK))

    assert decision.to_state is CMP
    assert decision.event_type == "completed"


def test_completion_is_accepted_without_evidence_when_there_is_no_template() -> None:
    decision = accepted(decide(ticket_in(ONS), Complete(), None))

    assert decision.to_state is CMP


@pytest.mark.parametrize(
    ("evidence", "missing"),
    [
        ((BEFORE, SIGNATURE), [("photo", "after")]),
        ((AFTER, SIGNATURE), [("photo", "before")]),
        ((BEFORE, AFTER), [("signature", "customer")]),
        ((SIGNATURE,), [("photo", "before"), ("photo", "after")]),
        ((), [("photo", "before"), ("photo", "after"), ("signature", "customer")]),
        ((BEFORE, BEFORE, SIGNATURE), [("photo", "after")]),
        (
            (EvidenceSummary(EvidenceKind.DOCUMENT, "after"), BEFORE, SIGNATURE),
            [("photo", "after")],
        ),
    ],
)
def test_completion_is_rejected_listing_exactly_the_unmet_evidence_requirements(
    evidence: tuple[EvidenceSummary, ...], missing: list[tuple[str, str]]
) -> None:
    ticket = ticket_in(ONS, evidence=evidence)

    decision = rejected(decide(ticket, Complete(), WATER_LEAK))

    assert decision.code == "evidence_missing"
    assert decision.event_type == "completion_rejected"
    assert decision.state is ONS
    listed = [(item["kind"], item["tag"]) for item in decision.details["missing_evidence"]]
    assert listed == missing
    assert all(item["description"] for item in decision.details["missing_evidence"])
    assert decision.details["incident_type"] == "water_leak"
    for kind, tag in missing:
        assert f"{kind}:{tag}" in decision.message


def test_completion_is_rejected_when_after_photo_is_missing() -> None:
    decision = rejected(
        decide(ticket_in(ONS, evidence=(BEFORE, SIGNATURE)), Complete(), WATER_LEAK)
    )

    assert decision.details["missing_evidence"] == [
        {"kind": "photo", "tag": "after", "description": "Photo of the repaired area"}
    ]


def test_attached_evidence_counts_towards_completion() -> None:
    ticket = ticket_in(ONS)
    for kind, tag in [("photo", "before"), ("photo", "after"), ("signature", "customer")]:
        attach = accepted(decide(ticket, AttachEvidence(EvidenceKind(kind), tag), WATER_LEAK))
        assert attach.to_state is ONS
        assert attach.details == {"kind": kind, "tag": tag}
        assert rejected(decide(ticket, Complete(), WATER_LEAK)).code == "evidence_missing"
        ticket = attach.ticket

    assert ticket.evidence == (BEFORE, AFTER, SIGNATURE)
    assert accepted(decide(ticket, Complete(), WATER_LEAK)).to_state is CMP


# --- hold and resume ------------------------------------------------------------------------


@pytest.mark.parametrize("cause", list(HoldCause))
@pytest.mark.parametrize("state", [NEW, RTS, SCH, DIS, ONS])
def test_a_hold_remembers_the_state_it_interrupted_and_why(state: State, cause: HoldCause) -> None:
    ticket = ticket_in(state)

    decision = accepted(decide(ticket, Hold(cause, "waiting"), None))

    assert decision.to_state is HLD
    assert decision.ticket.state_before_hold is state
    assert decision.ticket.hold_cause is cause
    assert decision.details == {"cause": str(cause)}


@pytest.mark.parametrize("cause", list(HoldCause))
@pytest.mark.parametrize("state", [NEW, RTS, SCH, DIS, ONS])
def test_resuming_returns_the_ticket_to_the_state_it_was_held_from(
    state: State, cause: HoldCause
) -> None:
    ticket = ticket_in(state, evidence=(BEFORE,))
    held = accepted(decide(ticket, Hold(cause, "waiting"), None)).ticket

    decision = accepted(decide(held, Resume(), None))

    assert decision.from_state is HLD
    assert decision.to_state is state
    assert decision.ticket == ticket
    assert decision.details == {"cause": str(cause)}
    assert (HLD, Action.RESUME, state) in TRANSITIONS


def test_a_held_ticket_cannot_be_held_again() -> None:
    decision = rejected(decide(ticket_in(HLD), Hold(HoldCause.CUSTOMER, "again"), None))

    assert decision.code == "invalid_transition"


# --- cancel, evidence, notes ----------------------------------------------------------------


def test_a_held_ticket_can_be_cancelled() -> None:
    decision = accepted(decide(ticket_in(HLD), Cancel("customer withdrew"), None))

    assert decision.to_state is CNL
    assert decision.event_type == "cancelled"


@pytest.mark.parametrize(
    ("action", "event_type"),
    [
        (Action.CONTACT_ATTEMPT, "contact_attempt"),
        (Action.ESCALATE, "escalation"),
        (Action.MITIGATE, "mitigation"),
    ],
)
@pytest.mark.parametrize("state", COLUMNS)
def test_notes_are_recorded_in_any_state_and_never_change_the_ticket(
    state: State, action: Action, event_type: str
) -> None:
    ticket = ticket_in(state)

    decision = accepted(decide(ticket, Note(action, "noted"), None))

    assert decision.ticket == ticket
    assert decision.event_type == event_type
    assert (state, action, state) in TRANSITIONS


# --- allowed actions ------------------------------------------------------------------------


@pytest.mark.parametrize("state", COLUMNS)
def test_allowed_actions_lists_what_the_state_admits_sorted(state: State) -> None:
    assert allowed_actions(ticket_in(state)) == ALLOWED[state]


def test_allowed_actions_offers_dispatch_from_ready_to_schedule_only_to_p1_tickets() -> None:
    assert "dispatch" in allowed_actions(ticket_in(RTS, priority=Priority.P1))
    for priority in (Priority.P2, Priority.P3, Priority.P4):
        assert "dispatch" not in allowed_actions(ticket_in(RTS, priority=priority))


def test_each_view_gets_lists_of_its_own() -> None:
    # The answers are worked out once per state: a caller that edits the list it was given
    # must not change the next ticket's.
    first = allowed_actions(ticket_in(SCH))
    first.remove("dispatch")
    tools = allowed_tools(ticket_in(SCH))
    tools.clear()
    assert allowed_actions(ticket_in(SCH)) == ALLOWED[SCH]
    assert "ticket.dispatch" in allowed_tools(ticket_in(SCH))


def test_a_new_ticket_filled_in_while_on_hold_resumes_ready_to_schedule() -> None:
    held = accepted(decide(ticket_in(NEW), Hold(HoldCause.CUSTOMER, "call back"), None)).ticket
    filled = accepted(decide(held, Update({"site_address": "1 Analytical Row"}), None)).ticket
    assert filled.state is HLD

    decision = accepted(decide(filled, Resume(), None))

    assert decision.to_state is RTS
    assert (HLD, Action.RESUME, RTS) in TRANSITIONS


@pytest.mark.parametrize("action", [Action.COMPLETE, Action.CREATE, Action.CANCEL])
def test_a_note_cannot_smuggle_in_a_state_changing_action(action: Action) -> None:
    with pytest.raises(ValueError, match="not a note"):
        Note(action)


def test_an_evidence_rejection_tells_what_the_ticket_still_allows() -> None:
    decision = rejected(decide(ticket_in(State.ON_SITE), Complete(), WATER_LEAK))

    assert decision.details["allowed_actions"] == allowed_for(State.ON_SITE, Priority.P2)


def test_an_attach_at_the_evidence_limit_is_rejected_with_the_limit_and_the_count() -> None:
    ticket = ticket_in(ONS, evidence=(BEFORE, EvidenceSummary(EvidenceKind.NOTE, "log", 2)))

    decision = rejected(decide(ticket, AttachEvidence(EvidenceKind.PHOTO, "after", limit=3), None))

    assert decision.code == "evidence_limit_reached"
    assert decision.event_type == "action_rejected"
    assert (decision.details["limit"], decision.details["count"]) == (3, 3)


def test_an_attach_below_the_evidence_limit_counts_the_new_item() -> None:
    ticket = ticket_in(ONS, evidence=(EvidenceSummary(EvidenceKind.NOTE, "log", 2),))

    decision = accepted(decide(ticket, AttachEvidence(EvidenceKind.PHOTO, "after", limit=3), None))

    assert decision.ticket.evidence_count == 3
