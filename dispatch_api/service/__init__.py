"""dispatch-api use cases: transactions that tie the domain to the store."""

from ._approvals import ApprovalService
from ._caller import Caller
from ._technicians import TechnicianFilter, TechnicianService, technician_view
from ._tickets import Clock, EvidenceUpload, TicketService
from ._views import event_view, evidence_view, queue_view, ticket_view

__all__ = [
    "ApprovalService",
    "Caller",
    "Clock",
    "EvidenceUpload",
    "TechnicianFilter",
    "TechnicianService",
    "TicketService",
    "event_view",
    "evidence_view",
    "queue_view",
    "technician_view",
    "ticket_view",
]
