"""The dispatch-api aiohttp application: routes, middlewares, and resources in cleanup_ctx."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from schemas import openapi_document
from telemetry import (
    SAFE_ID,
    JsonLog,
    log_context,
    metrics_response,
    new_id,
    new_registry,
    observe_middleware,
    tracing_middleware,
)

from ..console import create_console
from ..domain import template_to_json
from ..errors import Unavailable
from ..metrics import ApiMetrics
from ..service import ApprovalService, Clock, TechnicianService, TicketService
from ..settings import ApiSettings
from ..store import Principal, connection, create_pool, idempotency, templates
from ..store import _sla as sla_store
from . import _approvals, _evidence, _technicians, _tickets
from ._context import (
    authenticate,
    caller_for,
    claimed_ids,
    own_request_id,
    own_trace,
    request_id_for,
)
from ._keys import (
    APPROVALS,
    CALLER,
    CLOCK,
    CORRELATION_ID,
    DRAINING,
    METRICS,
    OPENAPI,
    POOL,
    PRINCIPALS,
    REBUILD,
    REQUEST_ID,
    SERVICE,
    SETTINGS,
    TECHNICIANS,
    TEMPLATES,
    VALIDATORS,
)
from ._principal_cache import PrincipalCache
from ._problems import problem_middleware, problem_response
from ._tickets import json_response
from ._validation import BodyValidators

_log = logging.getLogger("dispatch_api")


def utc_now() -> datetime:
    return datetime.now(UTC)


@web.middleware
async def echo_ids_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: every response, errors included, carries X-Correlation-ID (and X-Request-ID
    once known). An unsafe incoming id is replaced here and refused by `caller_middleware`."""
    incoming = request.headers.get("X-Correlation-ID", "")
    request[CORRELATION_ID] = incoming if SAFE_ID.fullmatch(incoming) else new_id()
    response = await handler(request)
    response.headers["X-Correlation-ID"] = request[CORRELATION_ID]
    response.headers["X-Request-ID"] = request.get(REQUEST_ID) or request_id_for(request)
    return response


@web.middleware
async def caller_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate /v1 calls and resolve who acts, under which request and trace ids."""
    if request.path.startswith("/v1/"):
        # Set before anything can fail, so that a 400 or 401 echoes a request id too.
        request[REQUEST_ID] = request_id_for(request)
        principal = await authenticate(request, request.app[PRINCIPALS], request.app[POOL])
        if principal.trusted_gateway:
            return await _as_caller(request, principal, handler)
        # Only the gateway may stamp a call with ids of its own choosing (the agent's call
        # it relays); anyone else gets ids the server minted, and what it claimed is logged.
        request[REQUEST_ID] = own_request_id(request, principal)
        request[CORRELATION_ID] = new_id()
        log_context(request).update(claimed_ids(request))
        with own_trace(request):
            return await _as_caller(request, principal, handler)
    return await handler(request)


async def _as_caller(
    request: web.Request, principal: Principal, handler: Handler
) -> web.StreamResponse:
    caller = caller_for(request, principal, request[REQUEST_ID], request[CORRELATION_ID])
    request[CALLER] = caller
    log_context(request).update(
        actor_type=str(caller.actor.type),
        actor_id=caller.actor.id,
        role=str(caller.actor.role),
        tool_name=caller.actor.tool_name,
    )
    return await handler(request)


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready: the database answers, and the process is not shutting down."""
    if request.app[DRAINING].is_set():
        return problem_response(Unavailable("draining", "shutting down; send no new requests"))
    try:
        async with asyncio.timeout(2):
            await request.app[POOL].fetchval("SELECT 1")
    except Exception as exc:  # any failure to answer means not ready
        return problem_response(
            Unavailable("database_unavailable", f"database check failed: {type(exc).__name__}")
        )
    return json_response({"status": "ready", "database": "ok"})


def start_draining(app: web.Application) -> None:
    """Not ready from now on: /readyz answers 503 while requests are still served."""
    app[DRAINING].set()


async def _start_draining(app: web.Application) -> None:
    # on_shutdown runs once the listener is closed, before requests in flight are awaited.
    start_draining(app)


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


async def list_templates(request: web.Request) -> web.Response:
    items = [template_to_json(t) for t in request.app[TEMPLATES].values()]
    return json_response({"templates": items})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition. The gauges read from the database (tickets per state, oldest
    per state, SLA now) are refreshed by a background task every DISPATCH_METRICS_REFRESH_S,
    so that a scrape, which anyone may send, never reaches the database; with 0, at each
    scrape instead, one refresh at a time however many scrapes arrive."""
    if request.app[SETTINGS].metrics_refresh_s == 0:
        await request.app[_GAUGES].refresh(request.app)
    return metrics_response(request.app[METRICS].registry)


class _SharedRefresh:
    """At most one gauge refresh in flight; scrapes arriving meanwhile wait for it."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    async def refresh(self, app: web.Application) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(refresh_database_gauges(app))
        await asyncio.shield(self._task)


_GAUGES = web.AppKey("gauges", _SharedRefresh)


async def refresh_database_gauges(app: web.Application) -> None:
    """Read the gauges every replica must agree on from PostgreSQL."""
    registry = app[METRICS]
    try:
        now = app[CLOCK]()
        window = timedelta(minutes=app[SETTINGS].sla_at_risk_minutes)
        async with connection(app[POOL]) as conn:
            rows = await conn.fetch(
                "SELECT state, count(*) AS n, min(state_entered_at) AS oldest"
                " FROM tickets GROUP BY state"
            )
            sla_now = await sla_store.counts(conn, now, window)
        registry.set_ticket_counts(
            {r["state"]: r["n"] for r in rows},
            {r["state"]: (now - r["oldest"]).total_seconds() for r in rows},
            sla_now,
        )
    except Unavailable:
        # No stale truth: the series vanish until the database answers again.
        registry.forget_database_gauges()
        _log.warning("tickets_in_state not refreshed: database unavailable")


def _on_response(request: web.Request, status: int, route: str, latency_ms: float) -> None:
    m = request.app[METRICS]
    answered, latency = m.answered(route, status)
    answered.inc()
    latency.observe(latency_ms)
    if status >= 400:
        m.errors.labels(log_context(request).get("error_code") or f"http_{status}").inc()


def create_app(
    settings: ApiSettings,
    dsn: str,
    *,
    clock: Clock = utc_now,
    log: JsonLog | None = None,
) -> web.Application:
    """The dispatch-api application; the pool opens when the app starts, not here."""
    app = web.Application(
        middlewares=[
            tracing_middleware("dispatch-api", excluded={"/healthz", "/metrics"}),
            observe_middleware(log or JsonLog("dispatch-api"), _on_response),
            echo_ids_middleware,
            problem_middleware,
            caller_middleware,
        ],
        client_max_size=settings.max_body_bytes,
        # Bodies are taken in identity coding only (web/_body.py answers 415 to any other):
        # aiohttp's decoder would spend CPU on a body we refuse, and log its errors itself.
        # A request whose caller hangs up still runs to its end, under every runner (the
        # test server would cancel it): a write already sent commits with its outcome stored
        # under the Idempotency-Key, so the caller's re-sent request gets the replay.
        handler_args={"auto_decompress": False, "handler_cancellation": False},
    )
    app[METRICS] = ApiMetrics(new_registry())
    app[DRAINING] = asyncio.Event()
    app.on_shutdown.append(_start_draining)
    document = openapi_document("dispatch-api")
    app[SETTINGS] = settings
    app[REBUILD] = _tickets.build_command
    app[CLOCK] = clock
    app[OPENAPI] = orjson.dumps(document)
    app[VALIDATORS] = BodyValidators(document)
    app[PRINCIPALS] = PrincipalCache(concurrency=settings.auth_lookup_concurrency)
    app[_GAUGES] = _SharedRefresh()
    app.cleanup_ctx.append(_database(dsn))
    app.cleanup_ctx.append(_purge_idempotency_keys)
    app.cleanup_ctx.append(_sweep_sla_breaches)
    app.cleanup_ctx.append(_sweep_approvals)
    app.cleanup_ctx.append(_refresh_gauges)
    _add_routes(app)
    return app


def _add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/healthz", healthz)
    r.add_get("/readyz", readyz)
    r.add_get("/openapi.json", openapi)
    r.add_get("/metrics", metrics)
    r.add_get("/v1/templates", list_templates)
    r.add_post("/v1/tickets", _tickets.create_ticket)
    r.add_get("/v1/tickets", _tickets.list_tickets)
    r.add_get("/v1/tickets/{ticket_id}", _tickets.get_ticket)
    r.add_patch("/v1/tickets/{ticket_id}", _tickets.update_ticket)
    for action in _tickets.ACTION_ROUTES:
        r.add_post(f"/v1/tickets/{{ticket_id}}/{action}", _tickets.action_handler(action))
    r.add_post("/v1/tickets/{ticket_id}/evidence", _evidence.attach_evidence)
    r.add_get("/v1/tickets/{ticket_id}/evidence", _evidence.list_evidence)
    r.add_get("/v1/tickets/{ticket_id}/evidence/{evidence_id}", _evidence.get_evidence)
    r.add_get("/v1/tickets/{ticket_id}/evidence/{evidence_id}/content", _evidence.download_evidence)
    r.add_get("/v1/tickets/{ticket_id}/timeline", _tickets.get_timeline)
    r.add_get("/v1/sla", _tickets.list_sla)
    r.add_get("/v1/technicians", _technicians.list_technicians)
    r.add_post("/v1/technicians", _technicians.create_technician)
    r.add_get("/v1/technicians/{technician_id}", _technicians.get_technician)
    r.add_patch("/v1/technicians/{technician_id}", _technicians.patch_technician)
    _approvals.add_routes(app)
    app.add_subapp("/console/", create_console())


def _database(dsn: str):  # type: ignore[no-untyped-def]
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        s = app[SETTINGS]
        pool = await create_pool(
            dsn,
            min_size=s.db_pool_min,
            max_size=s.db_pool_max,
            statement_timeout_ms=s.db_statement_timeout_ms,
            lock_timeout_ms=s.db_lock_timeout_ms,
        )
        app[POOL] = pool
        known = await templates.load(pool)
        app[TEMPLATES] = known
        app[SERVICE] = TicketService(
            pool,
            known,
            app[CLOCK],
            app[METRICS],
            s.targets,
            s.max_evidence_per_ticket,
            s.window_policy,
            s.approvals,
        )
        app[APPROVALS] = ApprovalService(pool, app[SERVICE], s.approvals, app[CLOCK], app[METRICS])
        app[TECHNICIANS] = TechnicianService(pool, app[CLOCK])
        try:
            yield
        finally:
            await pool.close()

    return ctx


async def _purge_idempotency_keys(app: web.Application) -> AsyncIterator[None]:
    """Delete idempotency keys past their retention, every purge interval, in the background."""
    settings = app[SETTINGS]
    retention = timedelta(hours=settings.idempotency_retention_hours)

    async def loop() -> None:
        while True:
            try:
                removed = await idempotency.purge(app[POOL], app[CLOCK](), retention)
                if removed:
                    _log.info("purged %d idempotency keys", removed)
            except Exception:
                _log.exception("idempotency key purge failed; retrying next interval")
            await asyncio.sleep(settings.idempotency_purge_interval_s)

    task = asyncio.create_task(loop(), name="idempotency-purge")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _sweep_sla_breaches(app: web.Application) -> AsyncIterator[None]:
    """Record SLA breaches as they fall due, every sweep interval. Every replica sweeps;
    the database decides who records each breach, so it is recorded once."""
    interval = app[SETTINGS].sla_sweep_interval_s

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                recorded = await app[SERVICE].sweep_sla()
                if recorded:
                    _log.info("recorded %d SLA breaches", recorded)
            except Exception:
                _log.exception("SLA sweep failed; retrying next interval")

    task = asyncio.create_task(loop(), name="sla-sweeper")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _sweep_approvals(app: web.Application) -> AsyncIterator[None]:
    """Expire pending approvals past their expiry, and refresh the approval gauges, every
    DISPATCH_APPROVALS_SWEEP_INTERVAL_S. Every replica sweeps; each expiry is recorded once
    (the approval row is claimed with SKIP LOCKED)."""
    interval = app[SETTINGS].approvals_sweep_interval_s

    async def loop() -> None:
        while True:
            try:
                expired = await app[APPROVALS].sweep()
                if expired:
                    _log.info("expired %d approvals", expired)
            except Exception:
                _log.exception("approval sweep failed; retrying next interval")
            await asyncio.sleep(interval)

    task = asyncio.create_task(loop(), name="approval-sweeper")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _refresh_gauges(app: web.Application) -> AsyncIterator[None]:
    """With DISPATCH_METRICS_REFRESH_S > 0 (the default), refresh the database gauges in
    the background."""
    interval = app[SETTINGS].metrics_refresh_s
    if interval == 0:
        yield
        return

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval)
            await refresh_database_gauges(app)

    await refresh_database_gauges(app)  # serve true values from the first scrape on
    task = asyncio.create_task(loop(), name="metrics-refresh")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
