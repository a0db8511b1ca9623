"""Which role may perform which action, and which tickets a technician may touch."""

from __future__ import annotations

import pytest

from dispatch_api.domain import (
    Action,
    Actor,
    ActorType,
    Role,
    State,
    Ticket,
    may_access,
    may_perform,
)

A = Action

#: Written out by hand: the actions each role is granted; every other action is refused.
GRANTS: dict[Role, set[Action]] = {
    Role.SUPERVISOR: set(Action),
    Role.GATEWAY: set(Action),
    Role.DISPATCHER: {
        A.CREATE,
        A.UPDATE,
        A.SCHEDULE,
        A.DISPATCH,
        A.HOLD,
        A.RESUME,
        A.CANCEL,
        A.ATTACH_EVIDENCE,
        A.CONTACT_ATTEMPT,
        A.ESCALATE,
        A.MITIGATE,
    },
    Role.TECHNICIAN: {
        A.ARRIVE,
        A.ATTACH_EVIDENCE,
        A.COMPLETE,
        A.HOLD,
        A.RESUME,
        A.CONTACT_ATTEMPT,
        A.MITIGATE,
    },
}


def actor(role: Role, actor_id: str = "tech-7") -> Actor:
    return Actor(ActorType.HUMAN, actor_id, role)


def ticket(technician_id: str | None) -> Ticket:
    return Ticket(id="T-1", state=State.SCHEDULED, technician_id=technician_id)


def test_the_grant_table_covers_every_role() -> None:
    assert set(GRANTS) == set(Role)


@pytest.mark.parametrize("action", list(Action))
@pytest.mark.parametrize("role", list(Role))
def test_each_role_may_perform_exactly_the_actions_it_is_granted(
    role: Role, action: Action
) -> None:
    assert may_perform(actor(role), action) is (action in GRANTS[role])


@pytest.mark.parametrize("action", [A.CREATE, A.SCHEDULE, A.DISPATCH, A.CANCEL])
def test_a_technician_cannot_create_schedule_dispatch_or_cancel(action: Action) -> None:
    assert not may_perform(actor(Role.TECHNICIAN), action)


@pytest.mark.parametrize("action", [A.ARRIVE, A.COMPLETE, A.ATTACH_EVIDENCE, A.HOLD])
def test_a_technician_can_do_the_field_work(action: Action) -> None:
    assert may_perform(actor(Role.TECHNICIAN), action)


@pytest.mark.parametrize("action", [A.ARRIVE, A.COMPLETE])
def test_a_dispatcher_cannot_arrive_or_complete(action: Action) -> None:
    assert not may_perform(actor(Role.DISPATCHER), action)


def test_a_supervisor_can_do_everything() -> None:
    assert all(may_perform(actor(Role.SUPERVISOR), action) for action in Action)


def test_a_technician_may_access_a_ticket_assigned_to_them() -> None:
    assert may_access(actor(Role.TECHNICIAN, "tech-7"), ticket("tech-7"))


def test_a_technician_may_not_access_a_ticket_assigned_to_someone_else() -> None:
    assert not may_access(actor(Role.TECHNICIAN, "tech-7"), ticket("tech-8"))


def test_a_technician_may_not_access_an_unassigned_ticket() -> None:
    assert not may_access(actor(Role.TECHNICIAN, "tech-7"), ticket(None))


@pytest.mark.parametrize("technician_id", ["tech-7", "tech-8", None])
@pytest.mark.parametrize("role", [Role.DISPATCHER, Role.SUPERVISOR, Role.GATEWAY])
def test_other_roles_may_access_any_ticket(role: Role, technician_id: str | None) -> None:
    assert may_access(actor(role, "tech-7"), ticket(technician_id))
