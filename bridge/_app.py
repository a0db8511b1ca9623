"""The bridge aiohttp application: agent-facing REST (and MCP) over one DispatchClient."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from dispatch_client import AttemptObserver, CallContext, DispatchClient
from schemas import openapi_document
from telemetry import (
    JsonLog,
    UnsafeId,
    client_trace_config,
    exact_read_connector,
    incoming_id,
    log_context,
    metrics_response,
    new_id,
    new_registry,
    observe_middleware,
    tracing_middleware,
)
from tools import ToolError, catalog

from . import _mcp, _resource, _rest
from ._agents import AgentDirectory, RateLimiter
from ._concurrency import AdaptiveLimit
from ._edge import (
    ClientGone,
    RefusedRequest,
    authenticate,
    correlation_id,
    expect_continue_later,
)
from ._fairness import KeyAdmission
from ._inflight import InFlightRegistry
from ._keys import (
    AGENT,
    AGENTS,
    CLIENT,
    CORRELATION_ID,
    DRAINING,
    INFLIGHT,
    LIMITER,
    LOG,
    METRICS,
    ORIGINS,
    OVERLOAD,
    PIPELINE,
    SETTINGS,
)
from ._metrics import BridgeMetrics
from ._origins import OriginPolicy
from ._overload import overload_guard
from ._pipeline import Pipeline
from ._trim import idle_trim
from .settings import BridgeSettings

_log = logging.getLogger("bridge")

#: Routes whose handlers authenticate themselves (invoke answers with its envelope).
_SELF_AUTHENTICATED = frozenset({"/v1/tools/{name}/invoke"})


@web.middleware
async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: correlation id in and out, every error as problem+json, never a 500 body."""
    try:
        minted = request[CORRELATION_ID] = new_id()  # until the caller's is validated
        request[CORRELATION_ID] = correlation_id(request, minted)
        route = request.match_info.route.resource
        template = route.canonical if route is not None else ""
        if template.startswith("/v1/") and template not in _SELF_AUTHENTICATED:
            request[AGENT] = await authenticate(request)
        response = await handler(request)
    except (ToolError, RefusedRequest) as exc:
        error, status = _rest.tool_error(exc)
        log_context(request)["error_code"] = error.code
        response = _rest.problem(error, status)
    except ClientGone:
        # Nobody reads this: 499 (as the request middleware counts a cancelled handler) so
        # the request is logged as the client's doing, not as a server error.
        response = web.Response(status=499)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _rest.problem(_http_error(exc, request), exc.status)
        if isinstance(exc, web.HTTPMethodNotAllowed):  # RFC 9110: a 405 names what is allowed
            response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
    except Exception:
        _log.exception("unhandled error on %s %s", request.method, request.path)
        response = _rest.problem(ToolError("internal", "An internal error occurred; it is logged."))
    response.headers.setdefault("X-Correlation-ID", request[CORRELATION_ID])
    if "X-Request-ID" not in response.headers:  # tool calls carry their request_id already
        response.headers["X-Request-ID"] = _request_id(request)
    return response


def _request_id(request: web.Request) -> str:
    try:
        return incoming_id(request.headers.get("X-Request-ID"), "X-Request-ID") or new_id()
    except UnsafeId:
        return new_id()


def _http_error(exc: web.HTTPException, request: web.Request) -> ToolError:
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return ToolError(
            "invalid_arguments",
            f"{request.method} is not allowed here; use {', '.join(sorted(exc.allowed_methods))}",
            details={"allowed_methods": sorted(exc.allowed_methods)},
        )
    if isinstance(exc, web.HTTPNotFound):
        return ToolError("not_found", f"no route {request.method} {request.path[:200]}")
    if isinstance(exc, web.HTTPForbidden):
        return ToolError("forbidden", exc.text or exc.reason)
    return ToolError("invalid_arguments", exc.reason)


async def healthz(request: web.Request) -> web.Response:
    return _rest.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready = this replica can serve: started and not draining.

    dispatch-api's state and the breaker are reported, not acted on: every replica shares
    the one dispatch-api, so a readiness that followed it would pull every replica out of
    rotation at once when it hiccups, and agents would get the load balancer's bare 502/503
    instead of the bridge's `upstream_unavailable` with a retry hint (issue 14)."""
    client = request.app[CLIENT]
    breaker = client.breaker.state
    draining = request.app[DRAINING][0]
    reachable = False if draining else await client.ready()
    ready = not draining
    body = {
        "status": "ready" if ready else "not_ready",
        "dispatch_api": "ok" if reachable else "unreachable",
        "breaker": str(breaker),
        "draining": draining,
    }
    return _rest.json_response(body, 200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    return metrics_response(request.app[METRICS].registry)


def _openapi(document: bytes) -> Callable[[web.Request], Awaitable[web.Response]]:
    """GET /openapi.json: schemas/openapi/bridge.json, serialized once."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=document, content_type="application/json")

    return handler


def _calls(app: web.Application) -> tuple[int, int]:
    """(calls in flight, calls started so far): what the idle trim (_trim.py) watches."""
    return len(app[INFLIGHT]), app[INFLIGHT].started


def _no_request_metrics(request: web.Request, status: int, route: str, latency: float) -> None:
    """Tool metrics are recorded by the pipeline, per tool; HTTP routes add nothing here."""


def create_bridge_app(
    settings: BridgeSettings,
    *,
    clock: Callable[[], float] = time.monotonic,
    log: JsonLog | None = None,
) -> web.Application:
    """The bridge application; its HTTP session and client open when the app starts."""
    if settings.gateway_token is None:
        raise ValueError("DISPATCH_GATEWAY_TOKEN: the bridge needs its dispatch-api token")
    log = log or JsonLog("bridge")
    app = web.Application(
        middlewares=[
            tracing_middleware("bridge", excluded={"/healthz", "/metrics"}),
            observe_middleware(log, _no_request_metrics),
            edge_middleware,
        ],
        # An agent that hangs up abandons its call: its handler is cancelled (aiohttp leaves
        # it running by default), so a call parked in backoff sends no further try to
        # dispatch-api. Safe for mutations: re-sent with its tool_call_id, the call is
        # replayed if the abandoned one was applied, else applied once.
        # Bodies are taken in identity coding only (_edge.py answers 415 to any other):
        # aiohttp's decoder would spend CPU on a body we refuse, and log its errors itself.
        handler_args={"handler_cancellation": True, "auto_decompress": False},
    )
    app[METRICS] = BridgeMetrics(new_registry())
    app[LOG] = log
    app[SETTINGS] = settings
    app[AGENTS] = AgentDirectory(settings.agents if settings.static_keys else ())
    app[LIMITER] = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst, clock)
    app[INFLIGHT] = InFlightRegistry(clock)
    app[ORIGINS] = OriginPolicy(settings.mcp_allowed_origins)
    app[DRAINING] = [False]
    limit = AdaptiveLimit(settings.min_in_flight, settings.max_in_flight)
    app[METRICS].in_flight_limit.set_function(lambda: limit.limit)
    app.cleanup_ctx.append(
        overload_guard(OVERLOAD, settings.max_loop_lag_ms / 1000, app[METRICS].loop_lag, limit)
    )
    app.cleanup_ctx.append(_dispatch_client(clock, limit))
    app.cleanup_ctx.append(idle_trim(_calls, settings.idle_trim_mb, log))
    app.on_response_prepare.append(_resource.challenge)
    app.on_shutdown.append(_start_draining)
    r = app.router
    r.add_get("/healthz", healthz)
    r.add_get("/readyz", readyz)
    r.add_get("/metrics", metrics)
    r.add_get("/openapi.json", _openapi(orjson.dumps(openapi_document("bridge"))))
    r.add_get("/v1/tools", _rest.list_tools)
    r.add_post("/v1/tools/{name}/invoke", _rest.invoke, expect_handler=expect_continue_later)
    r.add_post("/mcp", _mcp.handle)
    r.add_get("/mcp", _mcp.reject_method)
    r.add_delete("/mcp", _mcp.reject_method)
    r.add_get("/v1/config", _rest.show_config)
    if settings.oauth.enabled:
        app.cleanup_ctx.append(_resource.issuer_keys(clock))
    # Routed either way, so another method is 405 as for every documented route; with OAuth
    # off the document itself is 404 (nothing to discover).
    r.add_get(_resource.WELL_KNOWN, _resource.protected_resource)
    r.add_get(_resource.WELL_KNOWN + "/mcp", _resource.protected_resource)
    r.add_get("/v1/ops/inflight", _rest.inflight)
    return app


def start_draining(app: web.Application) -> None:
    """Not ready from now on: /readyz answers 503 while calls are still served."""
    app[DRAINING][0] = True


async def _start_draining(app: web.Application) -> None:
    # on_shutdown runs once the listener is closed: calls in flight get the drain timeout,
    # less a margin to write their answer before aiohttp stops waiting and cuts them.
    start_draining(app)
    if PIPELINE in app:
        drain_s = app[SETTINGS].drain_timeout_s
        app[PIPELINE].drain(drain_s - min(0.5, drain_s / 10))


def _dispatch_client(
    clock: Callable[[], float], limit: AdaptiveLimit
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        assert settings.gateway_token is not None
        # One long-lived session per process, created here (after any instrumentation),
        # never at import. Loopback and IP addresses skip the resolver's thread pool.
        # Its connections read exactly what arrived (telemetry/_reads.py).
        connector = exact_read_connector(limit=settings.api_max_connections, ttl_dns_cache=300)
        # No session-wide timeout: every try has its own (DispatchClient), and aiohttp's
        # default (300 s) would arm and cancel one more timer per request for nothing.
        unbounded = aiohttp.ClientTimeout(total=None)
        async with (
            aiohttp.ClientSession(
                connector=connector, trace_configs=[client_trace_config()], timeout=unbounded
            ) as session,
            # The same pool, without the trace config: for tries outside recorded traces.
            aiohttp.ClientSession(
                connector=connector, connector_owner=False, timeout=unbounded
            ) as untraced,
        ):
            metrics = app[METRICS]
            client = DispatchClient(
                session,
                settings.api_url,
                settings.gateway_token.reveal(),
                settings.retry,
                clock=clock,
                sleep=asyncio.sleep,
                observer=_attempt_logger(app[LOG]),
                on_retry=lambda ctx, reason: metrics.retries.labels(ctx.tool_name, reason).inc(),
                max_connections=settings.api_max_connections,
                untraced=untraced,
            )
            metrics.watch(client)
            app[CLIENT] = client
            per_key = KeyAdmission(
                settings.agent_max_in_flight,
                settings.agent_max_in_flight_bytes,
                bytes_per_s=settings.agent_max_bytes_per_s,
                clock=clock,
            )
            app[PIPELINE] = Pipeline(
                catalog(),
                client,
                app[INFLIGHT],
                clock,
                metrics,
                settings.max_in_flight,
                per_key,
                limit,
            )
            yield

    return ctx


def _attempt_logger(log: JsonLog) -> AttemptObserver:
    """A line per HTTP try to dispatch-api, with its attempt number (DESIGN section 6: each
    try of a retried call logs its attempt). A call answered by its first try is told by
    its request's line instead (`attempt` 1 and `upstream_latency_ms` on it): one line a
    call rather than two, the log being the largest share of the hop's own CPU (issue 20)."""

    def observe(ctx: CallContext, attempt: int, outcome: str, seconds: float) -> None:
        latency_ms = round(seconds * 1000, 3)
        line = ctx.line
        if attempt == 1 and outcome == "ok" and line is not None and "attempt" not in line:
            # "attempt" already there: a second dispatch-api call of the same tool call,
            # which gets a line of its own.
            line.update(attempt=1, upstream_latency_ms=latency_ms)
            return
        log.emit(
            "upstream_attempt",
            {
                "request_id": ctx.request_id,
                "correlation_id": ctx.correlation_id,
                "actor_type": ctx.actor_type,
                "actor_id": ctx.actor_id,
                "role": ctx.actor_role,
                "tool_name": ctx.tool_name,
                "attempt": attempt,
                "outcome": outcome,
                "latency_ms": latency_ms,
            },
            level="info" if outcome == "ok" else "warning",
        )

    return observe
