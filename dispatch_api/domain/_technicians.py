"""Technicians as the domain sees them: who may take which incident types."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Technician:
    id: str
    name: str
    #: Incident template names this technician may take.
    skills: tuple[str, ...]
    active: bool = True
    region: str | None = None
    #: Working hours, {"days": [1..7], "start": "HH:MM", "end": "HH:MM", "tz": "UTC"}, or
    #: None when not recorded; informational (no rule reads them yet).
    hours: dict[str, Any] | None = field(default=None, compare=False)

    def can_take(self, incident_type: str | None) -> bool:
        """True when active and skilled for `incident_type` (a ticket without one: any)."""
        return self.active and (incident_type is None or incident_type in self.skills)
