"""The floors for a Python hop, for S2: a minimal aiohttp forwarding proxy, bare or observed.

`POST /v1/tools/ticket.get/invoke` with `{"arguments": {"ticket_id": ...}}` becomes
`GET /v1/tickets/{id}` on dispatch-api with the gateway's token; the answer is wrapped the
way the bridge wraps it. Bare: no validation, retries, telemetry or auth: what any hop costs.
`evidence.attach` (bare only) likewise becomes `POST /v1/tickets/{id}/evidence` with a fresh
idempotency key: the noisy neighbour's floor, a hop that parses and re-encodes each upload.

Observed: the same, plus what the contract asks of every call and the issue forbids trading
for speed (DESIGN section 6), built from the services' own telemetry package: the server
span (sampled as the bridge samples), one JSON request line with the ids, a request id
minted and sent with the correlation id and `traceparent` downstream, and the tool's
counter, latency histogram and in-flight gauge. The bridge's cost above this floor is its
own work: auth, limits, validation, retries, breaker, drain.

Every variant reads small messages without asyncio's fresh 256 KiB buffer per read, as the
services do (telemetry/_reads.py; here by the simplest means, reads of at most 64 KiB,
whose heap growth a benchmark's short life does not see).

Capped (bare, with BENCH_PROXY_MAX_IN_FLIGHT set): a call that finds that many in flight
is refused with a 429 before its body is read, and nothing else: S6's floor for how soon a
refusal can be answered when the hop shares its core with dispatch-api and PostgreSQL.
With BENCH_PROXY_MAX_IN_FLIGHT=0 it refuses every call: S6's floor for what a refusal costs.

    python -m bench.proxy_floor PORT API_URL GATEWAY_TOKEN [observed]
"""

from __future__ import annotations

import asyncio.selector_events
import os
import sys
import time
from collections.abc import AsyncIterator

import aiohttp
import orjson
from aiohttp import web
from opentelemetry import propagate
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from telemetry import (
    JsonLog,
    TracingSettings,
    configure_stdlib_logging,
    configure_tracing,
    current_ids,
    log_context,
    new_id,
    observe_middleware,
    tracing_middleware,
)

SESSION = web.AppKey("session", aiohttp.ClientSession)
MAX_BODY = 16 * 1024 * 1024


def app(
    api_url: str, token: str, *, observed: bool = False, max_in_flight: int | None = None
) -> web.Application:
    middlewares = []
    if observed:
        configure_stdlib_logging("proxy")
        configure_tracing(TracingSettings(), "proxy")
        middlewares = [
            tracing_middleware("proxy", excluded=()),
            observe_middleware(JsonLog("proxy"), lambda *_: None),
        ]
    # Room for a max-size evidence upload (5 MiB as ~7 MB of base64 JSON); aiohttp's 1 MiB.
    application = web.Application(middlewares=middlewares, client_max_size=MAX_BODY)
    headers = {"Authorization": f"Bearer {token}"}
    registry = CollectorRegistry()
    calls = Counter("tool_invocations", "calls", ["tool", "outcome"], registry=registry)
    latency = Histogram("tool_latency_ms", "ms", ["tool"], registry=registry)
    running = Gauge("tool_calls_in_flight", "now", ["tool"], registry=registry)

    async def session(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(api_url) as s:
            app[SESSION] = s
            yield

    in_flight = 0
    refusal = orjson.dumps({"ok": False, "tool": "ticket.get", "error": {"code": "rate_limited"}})

    async def invoke(request: web.Request) -> web.Response:
        nonlocal in_flight
        if max_in_flight is not None and in_flight >= max_in_flight:
            return web.Response(body=refusal, status=429, content_type="application/json")
        in_flight += 1
        try:
            return await forward(request)
        finally:
            in_flight -= 1

    async def forward(request: web.Request) -> web.Response:
        started = time.perf_counter()
        body = orjson.loads(await request.read())
        path = f"/v1/tickets/{body['arguments']['ticket_id']}"
        sent, ids = headers, {}
        if observed:
            ids = {"X-Request-ID": new_id(), "X-Correlation-ID": new_id()}
            sent = {**headers, **ids}
            propagate.inject(sent)
            running.labels("ticket.get").inc()
        async with request.app[SESSION].get(path, headers=sent) as resp:
            ticket = orjson.loads(await resp.read())
        envelope = {"ok": True, "tool": "ticket.get", "result": {"ticket": ticket}}
        if observed:
            envelope.update(
                request_id=ids["X-Request-ID"],
                correlation_id=ids["X-Correlation-ID"],
                trace_id=current_ids()[0],
            )
            log_context(request).update(actor_type="agent", tool_name="ticket.get")
            running.labels("ticket.get").dec()
            calls.labels("ticket.get", "ok").inc()
            latency.labels("ticket.get").observe((time.perf_counter() - started) * 1000)
        return web.Response(
            body=orjson.dumps(envelope), content_type="application/json", headers=ids or None
        )

    async def attach(request: web.Request) -> web.Response:
        arguments = orjson.loads(await request.read())["arguments"]
        path = f"/v1/tickets/{arguments.pop('ticket_id')}/evidence"
        sent = {**headers, "Idempotency-Key": new_id(), "Content-Type": "application/json"}
        async with request.app[SESSION].post(path, data=orjson.dumps(arguments), headers=sent) as r:
            answer, status = orjson.loads(await r.read()), r.status
        ok = status < 300
        envelope = {"ok": ok, "tool": "evidence.attach", "result" if ok else "error": answer}
        body = orjson.dumps(envelope)
        return web.Response(body=body, status=status, content_type="application/json")

    application.cleanup_ctx.append(session)
    application.router.add_post("/v1/tools/ticket.get/invoke", invoke)
    if not observed:
        application.router.add_post("/v1/tools/evidence.attach/invoke", attach)
    return application


if __name__ == "__main__":
    port, api_url, token = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    observed = sys.argv[4:] == ["observed"]
    cap = os.environ.get("BENCH_PROXY_MAX_IN_FLIGHT")
    # The floor is the cheapest hop, and a 256 KiB buffer from mmap for each small read is
    # a cost any hop can leave out (the services read exactly what arrived instead).
    asyncio.selector_events._SelectorSocketTransport.max_size = 64 * 1024  # type: ignore[attr-defined]
    web.run_app(
        app(api_url, token, observed=observed, max_in_flight=int(cap) if cap else None),
        host="127.0.0.1",
        port=port,
        access_log=None,
        print=None,
    )
