"""`dispatch-bridge`: run the services, migrate the database, manage principals.

    dispatch-bridge up            everything on embedded PostgreSQL, for development
    dispatch-bridge serve-api     dispatch-api alone (production; DISPATCH_DATABASE_URL)
    dispatch-bridge serve-bridge  the bridge alone (production; DISPATCH_API_URL, keys)
    dispatch-bridge migrate       apply SQL migrations and seed incident templates
    dispatch-bridge create-principal --id ID --role ROLE [--gateway]
    dispatch-bridge why TICKET_ID | queue [--state S] | sla | tools   [--json]

Settings come from `DISPATCH_*` variables and an optional `--config` TOML file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from hashlib import sha256
from pathlib import Path

import asyncpg
import orjson
from aiohttp import web

from dispatch_api.domain import Role
from dispatch_api.settings import (
    ApiSettings,
    Secret,
    SettingsError,
    build_settings,
    load_api_settings,
    read_config,
)
from dispatch_api.store import connect, migrate, principals, start_embedded, templates
from dispatch_api.web import create_app
from dispatch_api.web import start_draining as start_draining_api
from telemetry import (
    BODY_TIMEOUT_S,
    GuardedSite,
    JsonLog,
    LogSettings,
    ServerSettings,
    TracingSettings,
    configure_stdlib_logging,
    configure_tracing,
    instrument_database,
    quiet_accept_errors,
)

from ._app import create_bridge_app, start_draining
from ._devcreds import DevCredentials, ensure_dev_credentials
from ._ops import run as run_ops
from .settings import load_bridge_settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "ops", False):
        return run_ops(args.command, args)
    try:
        settings = load_api_settings(os.environ, args.config)
    except SettingsError as exc:
        print(f"dispatch-bridge: invalid setting: {exc}", file=sys.stderr)
        return 2
    try:
        code: int = asyncio.run(args.run(settings, args))
    except SettingsError as exc:
        print(f"dispatch-bridge: invalid setting: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"dispatch-bridge: {exc}", file=sys.stderr)
        code = 1
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dispatch-bridge", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="TOML settings file (keys = setting names)")
    commands = parser.add_subparsers(required=True, metavar="COMMAND", dest="command")
    up = commands.add_parser("up", help="run everything on embedded PostgreSQL (development)")
    up.set_defaults(run=_up)
    serve = commands.add_parser("serve-api", help="run dispatch-api (needs DISPATCH_DATABASE_URL)")
    serve.set_defaults(run=_serve_api)
    bridge = commands.add_parser(
        "serve-bridge", help="run the bridge (needs DISPATCH_GATEWAY_TOKEN, agent keys)"
    )
    bridge.set_defaults(run=_serve_bridge)
    mig = commands.add_parser("migrate", help="apply migrations and seed incident templates")
    mig.set_defaults(run=_migrate)
    principal = commands.add_parser("create-principal", help="create a dispatch-api token")
    principal.add_argument("--id", required=True, help="principal id, e.g. tech-42")
    principal.add_argument("--role", required=True, choices=[r.value for r in Role])
    principal.add_argument(
        "--gateway", action="store_true", help="trusted to assert X-Actor-* (the bridge)"
    )
    principal.set_defaults(run=_create_principal)
    why = commands.add_parser("why", help="a ticket's timeline: who changed what, why, with what")
    why.add_argument("ticket_id")
    queue = commands.add_parser("queue", help="tickets, with waiting time and SLA time left")
    queue.add_argument("--state", action="append", help="repeatable, e.g. READY_TO_SCHEDULE")
    sla = commands.add_parser("sla", help="tickets breaching or at risk of breaching now")
    tools = commands.add_parser("tools", help="failure ratio and latency per tool, calls in flight")
    for ops in (why, queue, sla, tools):
        ops.add_argument("--json", action="store_true", help="JSON for scripts")
        ops.set_defaults(ops=True)
    return parser


def _database_url(settings: ApiSettings, *, embedded_ok: bool) -> str:
    if settings.database_url is not None:
        return settings.database_url.reveal()
    if not embedded_ok:
        raise SystemExit("dispatch-bridge: set DISPATCH_DATABASE_URL")
    return start_embedded(settings.data_dir.resolve() / "pg")


async def _prepare(settings: ApiSettings, dsn: str) -> None:
    conn = await connect(dsn)
    try:
        applied = await migrate(conn)
        if applied:
            print(f"applied migrations: {', '.join(applied)}", file=sys.stderr)
        await templates.seed(conn, templates.read_template_file(settings.templates_file))
    finally:
        await conn.close()


async def _migrate(settings: ApiSettings, args: argparse.Namespace) -> int:
    await _prepare(settings, _database_url(settings, embedded_ok=True))
    print("database is up to date")
    return 0


async def _create_principal(settings: ApiSettings, args: argparse.Namespace) -> int:
    dsn = _database_url(settings, embedded_ok=True)
    token = principals.new_token()
    conn = await connect(dsn)
    try:
        await principals.upsert(conn, args.id, Role(args.role), token, trusted_gateway=args.gateway)
    finally:
        await conn.close()
    print(orjson.dumps({"id": args.id, "role": args.role, "token": token}).decode())
    return 0


def _observability(service: str, args: argparse.Namespace, *, database: bool) -> LogSettings:
    """Process-wide set-up, once, before any app or session exists: JSON logs on stdout,
    the tracer provider, asyncpg spans for the service that talks to PostgreSQL."""
    config = read_config(args.config)
    try:
        tracing = build_settings(
            TracingSettings, os.environ, config.get("tracing", {}), where="[tracing]"
        )
        logs = build_settings(LogSettings, os.environ, config.get("logging", {}), where="[logging]")
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    configure_stdlib_logging(service, logs.level)
    configure_tracing(tracing, service)
    if database:
        instrument_database()
    return logs


async def _serve_api(settings: ApiSettings, args: argparse.Namespace) -> int:
    logs = _observability("dispatch-api", args, database=True)
    dsn = _database_url(settings, embedded_ok=False)
    app = create_app(settings, dsn, log=JsonLog("dispatch-api", level=logs.level))
    await _serve(
        [(app, settings.api_host, settings.api_port, start_draining_api)],
        drain_timeout_s=settings.drain_timeout_s,
        drain_delay_s=settings.drain_delay_s,
        limits=_server_settings(args),
        reserved_descriptors=settings.db_pool_max,
    )
    return 0


async def _serve_bridge(settings: ApiSettings, args: argparse.Namespace) -> int:
    bridge = load_bridge_settings(os.environ, args.config)
    if bridge.gateway_token is None:
        raise SettingsError(
            "DISPATCH_GATEWAY_TOKEN: the bridge needs its dispatch-api token (a principal"
            " created with `dispatch-bridge create-principal --id bridge --role gateway --gateway`)"
        )
    logs = _observability("bridge", args, database=False)
    app = create_bridge_app(bridge, log=JsonLog("bridge", level=logs.level))
    await _serve(
        [(app, bridge.host, bridge.port, start_draining)],
        drain_timeout_s=bridge.drain_timeout_s,
        drain_delay_s=bridge.drain_delay_s,
        limits=_server_settings(args),
        reserved_descriptors=bridge.max_in_flight,
    )
    return 0


async def _up(settings: ApiSettings, args: argparse.Namespace) -> int:
    logs = _observability("dispatch-bridge", args, database=True)
    dsn = _database_url(settings, embedded_ok=True)
    await _prepare(settings, dsn)
    creds = await ensure_dev_credentials(settings, dsn)
    bridge = load_bridge_settings(
        os.environ,
        args.config,
        port=settings.bridge_port,
        api_url=creds.api_url,
        gateway_token=Secret(creds.gateway_token),
        agent_keys=(f"dev-agent:supervisor:{sha256(creds.agent_key.encode()).hexdigest()}",),
    )
    _print_banner(creds, settings.data_dir / "dev-credentials.json")
    await _serve(
        [
            (
                create_app(settings, dsn, log=JsonLog("dispatch-api", level=logs.level)),
                settings.api_host,
                settings.api_port,
                start_draining_api,
            ),
            (
                create_bridge_app(bridge, log=JsonLog("bridge", level=logs.level)),
                bridge.host,
                bridge.port,
                start_draining,
            ),
        ],
        drain_timeout_s=bridge.drain_timeout_s,
        drain_delay_s=bridge.drain_delay_s,
        limits=_server_settings(args),
        reserved_descriptors=settings.db_pool_max + bridge.max_in_flight,
    )
    return 0


def _print_banner(creds: DevCredentials, path: Path) -> None:
    # On stderr: stdout carries the services' JSON log lines only.
    print(
        f"dispatch-api  {creds.api_url}   (token with the supervisor role: {creds.api_token})\n"
        f"bridge        {creds.bridge_url}   (agent key, every tool: {creds.agent_key})\n"
        f"credentials   {path}\n"
        "Ctrl-C stops.",
        file=sys.stderr,
        flush=True,
    )


#: An app to serve: the application, host, port, and what turns its readiness off.
Served = tuple[web.Application, str, int, Callable[[web.Application], None]]


def _server_settings(args: argparse.Namespace) -> ServerSettings:
    """Timeouts and the connection cap: `DISPATCH_*` over the TOML table `[server]`."""
    table = read_config(args.config).get("server", {})
    try:
        return build_settings(ServerSettings, os.environ, table, where="[server]")
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


async def _serve(
    apps: list[Served],
    *,
    drain_timeout_s: float = 10.0,
    drain_delay_s: float = 0.0,
    limits: ServerSettings | None = None,
    reserved_descriptors: int = 0,
) -> None:
    """Serve every app until SIGINT or SIGTERM, then shut down gracefully: readiness off
    first (/readyz 503) while still serving for `drain_delay_s`, so load balancers stop
    routing here; then stop accepting, let calls in flight finish for up to
    `drain_timeout_s`, close resources. `limits` bounds every client's time and the open
    connections; `reserved_descriptors` are kept out of the cap for outgoing connections."""
    limits = limits or ServerSettings()
    loop = asyncio.get_running_loop()
    quiet_accept_errors(loop)
    runners = []
    for app, host, port, _ in apps:
        app[BODY_TIMEOUT_S] = limits.body_timeout_s
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=drain_timeout_s,
            keepalive_timeout=limits.idle_timeout_s,
        )
        await runner.setup()
        site = GuardedSite(runner, host, port, limits, reserved_descriptors=reserved_descriptors)
        await site.start()
        runners.append(runner)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
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


if __name__ == "__main__":
    raise SystemExit(main())
