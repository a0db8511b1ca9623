"""Values of the dispatch domain: states, priorities, actors, tickets, evidence.

Everything here is pure data; nothing performs I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class State(enum.StrEnum):
    NEW = "NEW"
    READY_TO_SCHEDULE = "READY_TO_SCHEDULE"
    SCHEDULED = "SCHEDULED"
    DISPATCHED = "DISPATCHED"
    ON_SITE = "ON_SITE"
    ON_HOLD = "ON_HOLD"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (State.COMPLETED, State.CANCELLED)


class Priority(enum.StrEnum):
    P1 = "P1"
    P2 = "P2"
    P3 = "P3"
    P4 = "P4"


class ActorType(enum.StrEnum):
    AGENT = "agent"
    TOOL = "tool"
    HUMAN = "human"
    SYSTEM = "system"


class Role(enum.StrEnum):
    DISPATCHER = "dispatcher"
    TECHNICIAN = "technician"
    SUPERVISOR = "supervisor"
    GATEWAY = "gateway"


class HoldCause(enum.StrEnum):
    CUSTOMER = "customer"
    PROVIDER = "provider"


class EvidenceKind(enum.StrEnum):
    PHOTO = "photo"
    SIGNATURE = "signature"
    DOCUMENT = "document"
    NOTE = "note"


class Action(enum.StrEnum):
    """Everything a caller can do to a ticket; each one appends a timeline event."""

    CREATE = "create"
    UPDATE = "update"
    SCHEDULE = "schedule"
    DISPATCH = "dispatch"
    ARRIVE = "arrive"
    COMPLETE = "complete"
    HOLD = "hold"
    RESUME = "resume"
    CANCEL = "cancel"
    ATTACH_EVIDENCE = "attach_evidence"
    CONTACT_ATTEMPT = "contact_attempt"
    ESCALATE = "escalate"
    MITIGATE = "mitigate"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: the principal itself or, behind a trusted gateway, the agent it vouches for."""

    type: ActorType
    id: str
    role: Role
    tool_name: str | None = None


@dataclass(frozen=True, slots=True)
class EvidenceRequirement:
    kind: EvidenceKind
    tag: str | None
    description: str

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.tag}" if self.tag else str(self.kind)


@dataclass(frozen=True, slots=True)
class IncidentTemplate:
    name: str
    title: str
    requirements: tuple[EvidenceRequirement, ...]


@dataclass(frozen=True, slots=True)
class EvidenceSummary:
    """What the evidence rules need to know about attached items: `count` items of one kind
    and tag (a ticket's evidence is read as one summary per kind and tag, not item by item)."""

    kind: EvidenceKind
    tag: str | None
    count: int = 1


#: Fields a caller may set on create and update; anything else is rejected.
EDITABLE_FIELDS: tuple[str, ...] = (
    "customer_name",
    "contact_phone",
    "contact_email",
    "site_address",
    "incident_type",
    "priority",
    "description",
)


@dataclass(frozen=True, slots=True)
class Ticket:
    id: str
    state: State
    priority: Priority | None = None
    customer_name: str | None = None
    contact_phone: str | None = None
    contact_email: str | None = None
    site_address: str | None = None
    incident_type: str | None = None
    description: str | None = None
    technician_id: str | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None
    state_before_hold: State | None = None
    hold_cause: HoldCause | None = None
    evidence: tuple[EvidenceSummary, ...] = field(default=())

    @property
    def evidence_count(self) -> int:
        """How many evidence items the ticket holds."""
        return sum(e.count for e in self.evidence)

    @property
    def missing_fields(self) -> list[str]:
        """Required fields still absent, in a fixed order; `contact` means phone or email."""
        missing = []
        if not self.customer_name:
            missing.append("customer_name")
        if not (self.contact_phone or self.contact_email):
            missing.append("contact")
        if not self.site_address:
            missing.append("site_address")
        if not self.incident_type:
            missing.append("incident_type")
        if self.priority is None:
            missing.append("priority")
        return missing
