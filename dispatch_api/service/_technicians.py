"""Use cases of the technician directory: list, read, create and change technicians.

Dispatchers, supervisors and the gateway acting for itself manage the directory; a
technician reads its own record only (its principal id is its technician id). Mutations are
idempotent per principal like ticket mutations: key claimed, row written and answer stored
in one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from ..domain import Role, Technician
from ..errors import Conflict, Forbidden, NotFound
from ..store import (
    ConnectionPool,
    IdempotencyKey,
    StoredResponse,
    connection,
    idempotency,
    transaction,
)
from ..store import technicians as store
from ._caller import Caller
from ._tickets import Clock

#: Roles that manage the directory (the gateway: the bridge acting as itself).
MANAGERS = frozenset({Role.DISPATCHER, Role.SUPERVISOR, Role.GATEWAY})


@dataclass(frozen=True, slots=True)
class TechnicianFilter:
    active: bool | None = None
    skill: str | None = None
    #: (start, end): only technicians with no SCHEDULED/DISPATCHED/ON_SITE ticket whose
    #: window overlaps it.
    available: tuple[datetime, datetime] | None = None


def technician_view(row: asyncpg.Record | Mapping[str, Any]) -> dict[str, Any]:
    view = store.to_json(row)
    view["created_at"] = view["created_at"].isoformat()
    view["updated_at"] = view["updated_at"].isoformat()
    return view


class TechnicianService:
    def __init__(self, pool: ConnectionPool, clock: Clock) -> None:
        self._pool = pool
        self._clock = clock

    async def page(
        self, caller: Caller, where: TechnicianFilter, after: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page ordered by id, and the id to continue after, if more. A technician's
        listing holds at most its own record."""
        own = caller.actor.id if caller.actor.role is Role.TECHNICIAN else None
        async with connection(self._pool) as conn:
            rows = await store.list_rows(
                conn,
                active=where.active,
                skill=where.skill,
                available=where.available,
                only_id=own,
                cursor=after,
                limit=limit + 1,
            )
        more = len(rows) > limit
        rows = rows[:limit]
        return [technician_view(r) for r in rows], rows[-1]["id"] if more else None

    async def get(self, caller: Caller, technician_id: str) -> dict[str, Any]:
        # Another technician's record is answered like a missing one, as tickets are.
        if caller.actor.role is Role.TECHNICIAN and caller.actor.id != technician_id:
            raise _not_found(technician_id)
        async with connection(self._pool) as conn:
            row = await store.get_row(conn, technician_id)
        if row is None:
            raise _not_found(technician_id)
        return {"technician": technician_view(row)}

    async def create(
        self, caller: Caller, key: IdempotencyKey, body: Mapping[str, Any]
    ) -> StoredResponse:
        _require_manager(caller, "create technicians")
        technician = Technician(
            id=body["id"],
            name=body["name"],
            skills=tuple(dict.fromkeys(body.get("skills", ()))),
            active=body.get("active", True),
            region=body.get("region"),
            hours=body.get("hours"),
        )

        async def work(conn: asyncpg.Connection) -> StoredResponse:
            row = await store.create(conn, technician)
            if row is None:
                raise Conflict(
                    "technician_exists",
                    f"technician {technician.id} exists already; PATCH"
                    f" /v1/technicians/{technician.id} changes it",
                    extensions={"technician_id": technician.id},
                )
            return StoredResponse(201, orjson.dumps({"technician": technician_view(row)}))

        return await self._idempotent(key, work)

    async def patch(
        self, caller: Caller, key: IdempotencyKey, technician_id: str, body: Mapping[str, Any]
    ) -> StoredResponse:
        _require_manager(caller, "change technicians")
        changes = dict(body)
        if "skills" in changes:
            changes["skills"] = tuple(dict.fromkeys(changes["skills"]))

        async def work(conn: asyncpg.Connection) -> StoredResponse:
            row = await store.patch(conn, technician_id, changes)
            if row is None:
                raise _not_found(technician_id)
            return StoredResponse(200, orjson.dumps({"technician": technician_view(row)}))

        return await self._idempotent(key, work)

    async def _idempotent(self, key: IdempotencyKey, work: Any) -> StoredResponse:
        # An error raised by `work` rolls the key back with the write: a retry runs afresh.
        async with transaction(self._pool) as conn:
            stored = await idempotency.claim(conn, key, self._clock())
            if stored is not None:
                return stored
            response: StoredResponse = await work(conn)
            await idempotency.store(conn, key, response)
            return response


def _require_manager(caller: Caller, what: str) -> None:
    if caller.actor.role not in MANAGERS:
        raise Forbidden(
            "forbidden",
            f"role {caller.actor.role} may not {what}",
            extensions={"role": str(caller.actor.role), "action": what},
        )


def _not_found(technician_id: str) -> NotFound:
    return NotFound("technician_not_found", f"no technician {technician_id}")
