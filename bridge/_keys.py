"""Typed application state of the bridge app."""

from __future__ import annotations

from aiohttp import web

from dispatch_client import DispatchClient
from telemetry import JsonLog

from ._agents import Agent, AgentDirectory, RateLimiter
from ._inflight import InFlightRegistry
from ._metrics import BridgeMetrics
from ._oauth import TokenVerifier
from ._origins import OriginPolicy
from ._overload import OverloadGuard
from ._pipeline import Pipeline
from .settings import BridgeSettings

SETTINGS = web.AppKey("settings", BridgeSettings)
AGENTS = web.AppKey("agents", AgentDirectory)
LIMITER = web.AppKey("limiter", RateLimiter)
INFLIGHT = web.AppKey("inflight", InFlightRegistry)
CLIENT = web.AppKey("client", DispatchClient)
PIPELINE = web.AppKey("pipeline", Pipeline)
METRICS = web.AppKey("metrics", BridgeMetrics)
LOG = web.AppKey("log", JsonLog)
ORIGINS = web.AppKey("origins", OriginPolicy)
#: Refuses new calls at the adaptive in-flight limit (DISPATCH_MIN_IN_FLIGHT ..
#: DISPATCH_MAX_IN_FLIGHT) or while the event loop lags (DISPATCH_MAX_LOOP_LAG_MS).
OVERLOAD = web.AppKey("overload", OverloadGuard)
#: Present when OAuth is on (DISPATCH_OAUTH_ISSUER): checks access tokens.
VERIFIER = web.AppKey("verifier", TokenVerifier)
#: Set when shutdown begins: /readyz answers 503 so load balancers stop sending calls.
DRAINING = web.AppKey("draining", list[bool])

AGENT = web.RequestKey("agent", Agent)
CORRELATION_ID = web.RequestKey("correlation_id", str)
#: Set when a call is refused for a scope its token lacks: the step-up challenge's scope.
REQUIRED_SCOPE = web.RequestKey("required_scope", str)
