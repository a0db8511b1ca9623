"""Serving: process-wide observability set-up, then apps on their listeners until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable

from aiohttp import web

from telemetry import (
    BODY_TIMEOUT_S,
    GuardedSite,
    ServerSettings,
    configure_stdlib_logging,
    configure_tracing,
    drop_unread_body,
    instrument_database,
    quiet_accept_errors,
)

from ._config import Config
from ._heap import settle_heap

#: An app to serve: the application, host, port, and what turns its readiness off.
Served = tuple[web.Application, str, int, Callable[[web.Application], None]]


def observability(service: str, config: Config, *, database: bool) -> None:
    """Process-wide set-up, once, before any app or session exists: stdlib logging at the
    configured level, the tracer provider, asyncpg spans for a service that uses PostgreSQL."""
    configure_stdlib_logging(service, config.logging.level)
    configure_tracing(config.tracing, service)
    if database:
        instrument_database()


async def serve(
    apps: list[Served],
    *,
    drain_timeout_s: float = 10.0,
    drain_delay_s: float = 0.0,
    limits: ServerSettings | None = None,
    reserved_descriptors: int = 0,
    listening: Callable[[], None] | None = None,
) -> None:
    """Serve every app until SIGINT or SIGTERM, then shut down gracefully: readiness off
    first (/readyz 503) while still serving for `drain_delay_s`, so load balancers stop
    routing here; then stop accepting, let calls in flight finish for up to
    `drain_timeout_s`, close resources. `limits` bounds every client's time and the open
    connections; `reserved_descriptors` are kept out of the cap for outgoing connections.
    `listening` runs once every app listens (not if one cannot)."""
    limits = limits or ServerSettings()
    loop = asyncio.get_running_loop()
    quiet_accept_errors(loop)
    runners = []
    try:
        for app, host, port, _ in apps:
            app[BODY_TIMEOUT_S] = limits.body_timeout_s
            app.on_response_prepare.append(drop_unread_body)
            runner = web.AppRunner(
                app,
                access_log=None,
                handle_signals=False,
                shutdown_timeout=drain_timeout_s,
                keepalive_timeout=limits.idle_timeout_s,
            )
            await runner.setup()
            runners.append(runner)
            site = GuardedSite(
                runner, host, port, limits, reserved_descriptors=reserved_descriptors
            )
            await site.start()
        # Every app has started (pools, catalogs, compiled schemas): what is alive now lives
        # for the process, and the collector need not walk it again.
        settle_heap()
        if listening is not None:
            listening()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        for app, _, _, not_ready in apps:
            not_ready(app)
        if drain_delay_s > 0:
            stop.clear()  # a second signal ends the delay early
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), drain_delay_s)
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
