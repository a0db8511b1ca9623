"""Which role may perform which action, and the technician's assignment rule."""

from __future__ import annotations

from ._model import Action, Actor, Role, Ticket

_ALL = frozenset(Action)

ROLE_ACTIONS: dict[Role, frozenset[Action]] = {
    Role.SUPERVISOR: _ALL,
    # The gateway acting on its own behalf (no asserted actor) is an automation account.
    Role.GATEWAY: _ALL,
    Role.DISPATCHER: _ALL - {Action.ARRIVE, Action.COMPLETE},
    Role.TECHNICIAN: frozenset(
        {
            Action.ARRIVE,
            Action.ATTACH_EVIDENCE,
            Action.COMPLETE,
            Action.HOLD,
            Action.RESUME,
            Action.CONTACT_ATTEMPT,
            Action.MITIGATE,
        }
    ),
}


def may_perform(actor: Actor, action: Action) -> bool:
    """True when the actor's role grants the action at all."""
    return action in ROLE_ACTIONS[actor.role]


def may_access(actor: Actor, ticket: Ticket) -> bool:
    """Technicians see and act on the tickets assigned to them only; other roles on any."""
    if actor.role is Role.TECHNICIAN:
        return ticket.technician_id is not None and ticket.technician_id == actor.id
    return True
