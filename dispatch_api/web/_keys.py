"""Typed application state (aiohttp AppKey / request keys) shared by the web modules."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from ..domain import IncidentTemplate
from ..service import Caller, Clock, TicketService
from ..settings import ApiSettings
from ._context import PrincipalCache
from ._validation import BodyValidators

SETTINGS = web.AppKey("settings", ApiSettings)
CLOCK = web.AppKey("clock", Clock)  # type: ignore[type-abstract]
POOL = web.AppKey("pool", asyncpg.Pool)
SERVICE = web.AppKey("service", TicketService)
TEMPLATES = web.AppKey("templates", dict[str, IncidentTemplate])
VALIDATORS = web.AppKey("validators", BodyValidators)
PRINCIPALS = web.AppKey("principals", PrincipalCache)
OPENAPI = web.AppKey("openapi", bytes)

#: Set on every /v1 request by the context middleware.
CALLER = "dispatch_api.caller"
__all__ = ["CALLER", "CLOCK", "OPENAPI", "POOL", "PRINCIPALS", "SERVICE", "SETTINGS", "TEMPLATES", "VALIDATORS", "Caller"]
