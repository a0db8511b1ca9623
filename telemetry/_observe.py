"""The request middleware both services share: time it, log it once, hand it to metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ._logging import JsonLog
from ._metrics import route_label

#: Fields handlers and inner middlewares add to the request's log line (actor, tool, ...).
LOG_CONTEXT = web.RequestKey("log_context", dict[str, Any])

#: (request, response status, route label, latency in ms) -> None, for a service's metrics.
OnResponse = Callable[[web.Request, int, str, float], None]


def log_context(request: web.Request) -> dict[str, Any]:
    """The mutable dict of this request's extra log fields."""
    return request[LOG_CONTEXT]


def observe_middleware(log: JsonLog, on_response: OnResponse) -> Middleware:
    """One JSON line per request at completion, and its metrics; keep it inside the tracing
    middleware so the line carries the server span's ids."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[LOG_CONTEXT] = {}
        started = time.perf_counter()
        status = 500
        response: web.StreamResponse | None = None
        try:
            response = await handler(request)
            status = response.status
            return response
        except asyncio.CancelledError:
            status = 499  # the client went away before the answer
            raise
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            latency_ms = (time.perf_counter() - started) * 1000
            route = route_label(request)
            on_response(request, status, route, latency_ms)
            fields = request[LOG_CONTEXT]
            headers = response.headers if response is not None else {}
            log.emit(
                "http_request",
                {
                    "request_id": headers.get("X-Request-ID"),
                    "correlation_id": headers.get("X-Correlation-ID"),
                    "ticket_id": request.match_info.get("ticket_id"),
                    **fields,
                    "method": request.method,
                    "endpoint": route,
                    "status_code": status,
                    "latency_ms": round(latency_ms, 3),
                },
                level="error" if status >= 500 else "info",
            )

    return middleware
