"""Typed application state (aiohttp AppKey / request keys) shared by the web modules."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import asyncpg
from aiohttp import web

from ..domain import Command, IncidentTemplate
from ..metrics import ApiMetrics
from ..service import ApprovalService, Caller, Clock, TechnicianService, TicketService
from ..settings import ApiSettings
from ._principal_cache import PrincipalCache
from ._validation import BodyValidators

SETTINGS = web.AppKey("settings", ApiSettings)
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
POOL = web.AppKey("pool", asyncpg.Pool)
SERVICE = web.AppKey("service", TicketService)
TECHNICIANS = web.AppKey("technicians", TechnicianService)
APPROVALS = web.AppKey("approvals", ApprovalService)
TEMPLATES: web.AppKey[dict[str, IncidentTemplate]] = web.AppKey("templates")
VALIDATORS = web.AppKey("validators", BodyValidators)
PRINCIPALS = web.AppKey("principals", PrincipalCache)
OPENAPI = web.AppKey("openapi", bytes)
METRICS = web.AppKey("metrics", ApiMetrics)
DRAINING = web.AppKey("draining", asyncio.Event)
#: How an approved call's command is rebuilt from its action and body, as its route builds
#: it; here so that the console approves through the same function as /v1/approvals.
REBUILD: web.AppKey[Callable[[str, Mapping[str, Any]], tuple[Command, dict[str, Any]]]] = (
    web.AppKey("rebuild")
)

#: Set on every /v1 request by the context middleware.
CALLER = web.RequestKey("caller", Caller)
CORRELATION_ID = web.RequestKey("correlation_id", str)
REQUEST_ID = web.RequestKey("request_id", str)
__all__ = [
    "APPROVALS",
    "CALLER",
    "CLOCK",
    "CORRELATION_ID",
    "DRAINING",
    "METRICS",
    "OPENAPI",
    "POOL",
    "PRINCIPALS",
    "REBUILD",
    "REQUEST_ID",
    "SERVICE",
    "SETTINGS",
    "TECHNICIANS",
    "TEMPLATES",
    "VALIDATORS",
]
