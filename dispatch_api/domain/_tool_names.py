"""The bridge tool an agent calls for each ticket action (DESIGN section 5 names).

dispatch-api never imports the bridge's catalog; a test checks these names against it. The
answers list them beside the API action names so a model can follow them literally.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ._model import Action

ACTION_TOOLS: Mapping[Action, str] = {
    Action.CREATE: "ticket.create",
    Action.UPDATE: "ticket.update",
    Action.SCHEDULE: "ticket.schedule",
    Action.DISPATCH: "ticket.dispatch",
    Action.ARRIVE: "tech.arrive",
    Action.COMPLETE: "tech.complete",
    Action.HOLD: "ticket.hold",
    Action.RESUME: "ticket.resume",
    Action.CANCEL: "ticket.cancel",
    Action.ATTACH_EVIDENCE: "evidence.attach",
    Action.CONTACT_ATTEMPT: "customer.follow_up",
    Action.ESCALATE: "ticket.escalate",
    Action.MITIGATE: "mitigation.record",
}


def tools_for(actions: Iterable[str]) -> list[str]:
    """The tool names of `actions` (API action names), in the same order."""
    return [ACTION_TOOLS[Action(a)] for a in actions]
