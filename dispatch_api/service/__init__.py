"""dispatch-api use cases: transactions that tie the domain to the store."""

from ._tickets import Caller, Clock, EvidenceUpload, TicketService
from ._views import event_view, evidence_view, queue_view, ticket_view

__all__ = [
    "Caller",
    "Clock",
    "EvidenceUpload",
    "TicketService",
    "event_view",
    "evidence_view",
    "queue_view",
    "ticket_view",
]
