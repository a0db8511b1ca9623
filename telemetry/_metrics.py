"""Prometheus helpers: millisecond buckets, bounded labels, the /metrics response.

Each application owns a `CollectorRegistry` (so several apps can live in one process, as
`dispatch-bridge up` and the tests do) and serves it at `/metrics`.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    disable_created_metrics,
    generate_latest,
)

#: 1 ms to 30 s, for latencies recorded in milliseconds.
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    1,
    2.5,
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
    30000,
)

#: The route label of requests that matched no route: raw paths never become labels.
UNMATCHED = "unmatched"


def route_label(request: web.Request) -> str:
    """The route template (`/v1/tickets/{ticket_id}`), never the raw path."""
    resource = request.match_info.route.resource
    if resource is None or request.match_info.http_exception is not None:
        return UNMATCHED
    return resource.canonical


def metrics_response(registry: CollectorRegistry) -> web.Response:
    body = generate_latest(registry)
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def new_registry() -> CollectorRegistry:
    """A registry of the application's own; `_created` series are off (they double the
    series count and dashboards never use them)."""
    disable_created_metrics()  # type: ignore[no-untyped-call]
    return CollectorRegistry(auto_describe=True)
