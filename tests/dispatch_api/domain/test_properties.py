"""Properties of the state machine over random command sequences, driven from `create()`.

Independent random commands rarely line up into a ticket's whole life, so each scenario is a
plausible happy path for the ticket's template (fill in, schedule or P1 bypass, dispatch,
arrive, attach the template's evidence, complete) with random steps dropped and random
commands of every kind inserted anywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources

from hypothesis import given, settings
from hypothesis import strategies as st

from dispatch_api.domain import (
    TRANSITIONS,
    Accepted,
    Action,
    Arrive,
    AttachEvidence,
    Cancel,
    Command,
    Complete,
    Dispatch,
    EvidenceKind,
    Hold,
    HoldCause,
    IncidentTemplate,
    Note,
    Priority,
    Rejected,
    Resume,
    Schedule,
    State,
    Update,
    create,
    decide,
    parse_templates,
)

TEMPLATES: dict[str, IncidentTemplate] = parse_templates(
    json.loads(resources.files("dispatch_api.data").joinpath("incident_templates.json").read_text())
)
TECHNICIANS = ["tech-1", "tech-2"]
#: Evidence the templates ask for, plus items no template wants.
EVIDENCE: list[tuple[EvidenceKind, str | None]] = sorted(
    {(r.kind, r.tag) for t in TEMPLATES.values() for r in t.requirements}
    | {(EvidenceKind.PHOTO, None), (EvidenceKind.DOCUMENT, "other")},
    key=str,
)
REQUIRED_FIELDS: dict[str, str] = {
    "customer_name": "Ada Lovelace",
    "contact_phone": "+44 20 7946 0000",
    "contact_email": "ops@example.org",
    "site_address": "1 Analytical Row",
}
NOTE_ACTIONS = [Action.CONTACT_ATTEMPT, Action.ESCALATE, Action.MITIGATE]


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    """What the caller of `decide` appends for each decision, in the test's own model."""

    sequence: int
    type: str
    action: Action
    from_state: State | None
    to_state: State


@st.composite
def _fields(draw: st.DrawFn) -> dict[str, str | None]:
    """Mostly complete ticket fields, with a few left out (absent, or given as None)."""
    fields: dict[str, str | None] = {
        **REQUIRED_FIELDS,
        "incident_type": draw(st.sampled_from([*sorted(TEMPLATES), "unknown_type"])),
        "priority": str(draw(st.sampled_from(Priority))),
    }
    for name in draw(st.sets(st.sampled_from(sorted(fields)), max_size=3)):
        if draw(st.booleans()):
            del fields[name]
        else:
            fields[name] = None
    return fields


@st.composite
def _schedules(draw: st.DrawFn) -> Schedule:
    start = draw(
        st.datetimes(
            min_value=datetime(2026, 1, 1),
            max_value=datetime(2026, 12, 31),
            timezones=st.just(UTC),
        )
    )
    hours = draw(st.integers(min_value=1, max_value=8))
    return Schedule(draw(st.sampled_from(TECHNICIANS)), start, start + timedelta(hours=hours))


_reasons = st.sampled_from(["customer asked", "part on order", "safety"])
_dispatches = st.builds(
    Dispatch,
    technician_id=st.none() | st.sampled_from(TECHNICIANS),
    bypass_reason=st.none() | st.sampled_from(["", "gas smell"]),
)

_commands: st.SearchStrategy[Command] = st.one_of(
    st.builds(Update, fields=_fields()),
    _schedules(),
    _dispatches,
    st.just(Arrive()),
    st.just(Complete()),
    st.sampled_from(EVIDENCE).map(lambda pair: AttachEvidence(*pair)),
    st.builds(Hold, cause=st.sampled_from(HoldCause), reason=_reasons),
    st.just(Resume()),
    st.builds(Cancel, reason=_reasons),
    st.builds(Note, action=st.sampled_from(NOTE_ACTIONS), reason=_reasons),
)

#: Noise: one random command, or a hold and its resume back to back.
_noise: st.SearchStrategy[list[Command]] = st.one_of(
    _commands.map(lambda command: [command]),
    st.builds(Hold, cause=st.sampled_from(HoldCause), reason=_reasons).map(
        lambda hold: [hold, Resume()]
    ),
)


@st.composite
def _scenarios(draw: st.DrawFn) -> tuple[dict[str, str | None], list[Command]]:
    """Fields to create a ticket from, and the commands then sent to it."""
    fields = draw(_fields())
    incident_type = fields.get("incident_type") or "water_leak"
    priority = fields.get("priority") or str(Priority.P1)
    template = TEMPLATES.get(incident_type)
    requirements = list(template.requirements) if template else []

    happy: list[Command] = [
        Update(fields={**REQUIRED_FIELDS, "incident_type": incident_type, "priority": priority}),
        draw(_schedules()),
        Dispatch(technician_id=draw(st.sampled_from(TECHNICIANS)), bypass_reason="gas smell"),
        Arrive(),
        *(AttachEvidence(r.kind, r.tag) for r in draw(st.permutations(requirements))),
        Complete(),
    ]
    # Most steps stay; a dropped Schedule turns the dispatch into a (P1-only) bypass.
    kept = [step for step in happy if draw(st.integers(min_value=0, max_value=9)) > 0]
    noise = draw(st.lists(st.tuples(st.integers(0, len(kept)), _noise), max_size=20))
    commands: list[Command] = []
    for position, step in enumerate([*kept, None]):
        for at, inserted in noise:
            if at == position:
                commands.extend(inserted)
        if step is not None:
            commands.append(step)
    return fields, commands


@settings(max_examples=200, deadline=None, database=None)
@given(scenario=_scenarios())
def test_random_command_sequences_keep_every_state_machine_invariant(
    scenario: tuple[dict[str, str | None], list[Command]],
) -> None:
    fields, commands = scenario
    created = create("T-1", fields)
    assert (created.from_state, created.action, created.to_state) in TRANSITIONS
    ticket = created.ticket
    timeline = [TimelineEvent(1, created.event_type, Action.CREATE, None, ticket.state)]
    terminal: State | None = None
    held_from: State | None = None  # the test's own memory of where a hold interrupted

    for command in commands:
        before = ticket
        template = TEMPLATES.get(before.incident_type or "")
        length = len(timeline)

        decision = decide(before, command, template)

        # (c) exactly one decision, naming exactly one non-empty event type, per command.
        assert isinstance(decision, Accepted | Rejected)
        assert isinstance(decision.event_type, str)
        assert decision.event_type
        assert decision.action is command.action
        to_state = decision.to_state if isinstance(decision, Accepted) else decision.state
        timeline.append(
            TimelineEvent(length + 1, decision.event_type, decision.action, before.state, to_state)
        )
        assert len(timeline) == length + 1
        assert [event.sequence for event in timeline] == list(range(1, len(timeline) + 1))

        if isinstance(decision, Accepted):
            # (a) only edges the machine declares are ever taken.
            assert decision.from_state is before.state
            assert (decision.from_state, decision.action, decision.to_state) in TRANSITIONS
            # and a resume goes back to where the hold interrupted (a NEW ticket completed
            # while on hold moves on to READY_TO_SCHEDULE), not just anywhere active.
            if isinstance(command, Hold):
                held_from = before.state
            elif isinstance(command, Resume):
                expected = held_from
                if held_from is State.NEW and not before.missing_fields:
                    expected = State.READY_TO_SCHEDULE
                assert decision.to_state is expected
            ticket = decision.ticket
        else:
            # (d) a rejection leaves the ticket exactly as it was.
            assert decision.state is before.state
            assert decision.code
            assert ticket == before

        # (b) terminal means terminal: later moves are refused and the state is frozen.
        if terminal is not None:
            assert ticket.state is terminal
            if not isinstance(command, Note):
                assert isinstance(decision, Rejected)
                assert decision.code == "invalid_transition"
        elif ticket.state in (State.COMPLETED, State.CANCELLED):
            terminal = ticket.state

    assert len(timeline) == len(commands) + 1
