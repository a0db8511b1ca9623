"""dispatch-api's database adapter: asyncpg pool, migrations and the SQL of each aggregate."""

from . import _actions as actions
from . import _approvals as approvals
from . import _bookings as bookings
from . import _idempotency as idempotency
from . import _principals as principals
from . import _sessions as sessions
from . import _technicians as technicians
from . import _templates as templates
from . import _tickets as tickets
from ._approvals import ApprovalFilter, ApprovalRecord
from ._embedded import start_embedded
from ._evidence import EvidenceRecord
from ._idempotency import IdempotencyKey, StoredResponse
from ._migrations import migrate, migration_files
from ._pool import ConnectionPool, connect, connection, create_pool, transaction
from ._principals import Principal
from ._tickets import Event, TicketFilter, TicketRecord

__all__ = [
    "ApprovalFilter",
    "ApprovalRecord",
    "ConnectionPool",
    "Event",
    "EvidenceRecord",
    "IdempotencyKey",
    "Principal",
    "StoredResponse",
    "TicketFilter",
    "TicketRecord",
    "actions",
    "approvals",
    "bookings",
    "connect",
    "connection",
    "create_pool",
    "idempotency",
    "migrate",
    "migration_files",
    "principals",
    "sessions",
    "start_embedded",
    "technicians",
    "templates",
    "tickets",
    "transaction",
]
