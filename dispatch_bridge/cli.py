"""`dispatch-bridge`: run the services, migrate the database, manage principals.

    dispatch-bridge up            everything on embedded PostgreSQL, for development
    dispatch-bridge serve-api     dispatch-api alone (production; DISPATCH_DATABASE_URL)
    dispatch-bridge serve-bridge  the bridge alone (production; DISPATCH_API_URL, keys)
    dispatch-bridge migrate       apply SQL migrations and seed incident templates
    dispatch-bridge create-principal --id ID --role ROLE [--gateway]
    dispatch-bridge why TICKET_ID | queue [--state S] | sla | tools   [--json]
    dispatch-bridge approvals [--status S] | approve ID [--reason R] | deny ID --reason R

Settings come from `DISPATCH_*` variables and an optional TOML file (`--config`, or the
variable DISPATCH_CONFIG).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from bridge import create_bridge_app, start_draining
from dispatch_api.domain import Role
from dispatch_api.web import create_app
from dispatch_api.web import start_draining as start_draining_api
from settings import SettingsError
from telemetry import JsonLog

from ._approvals_cli import run as run_approvals
from ._config import Config, load_config
from ._database import create_principal_command, migrate_command
from ._errors import CommandError
from ._ops import run as run_ops
from ._serve import observability, serve
from ._up import up_command

#: What `approvals --status` accepts: the approval statuses, or `all`.
STATUSES = ("pending", "approved", "denied", "expired", "executed", "stale", "withdrawn", "all")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "ops", False):
        return run_ops(args.command, args)
    if getattr(args, "approvals_ops", False):
        return run_approvals(args.command, args)
    try:
        config = load_config(os.environ, args.config)
        code: int = asyncio.run(args.run(config, args))
    except SettingsError as exc:
        print(f"dispatch-bridge: invalid setting: {exc}", file=sys.stderr)
        code = 2
    except CommandError as exc:
        print(f"dispatch-bridge {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"dispatch-bridge: {exc}", file=sys.stderr)
        code = 1
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dispatch-bridge", description=__doc__.splitlines()[0])
    config = os.environ.get("DISPATCH_CONFIG") or None
    parser.add_argument(
        "--config",
        type=Path,
        default=Path(config) if config else None,
        help="TOML settings file (keys = setting names; default: $DISPATCH_CONFIG)",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND", dest="command")
    up = commands.add_parser("up", help="run everything on embedded PostgreSQL (development)")
    up.set_defaults(run=up_command)
    serve_api = commands.add_parser(
        "serve-api", help="run dispatch-api (needs DISPATCH_DATABASE_URL)"
    )
    serve_api.set_defaults(run=_serve_api)
    serve_bridge = commands.add_parser(
        "serve-bridge", help="run the bridge (needs DISPATCH_GATEWAY_TOKEN, agent keys)"
    )
    serve_bridge.set_defaults(run=_serve_bridge)
    mig = commands.add_parser("migrate", help="apply migrations and seed incident templates")
    mig.set_defaults(run=migrate_command)
    principal = commands.add_parser("create-principal", help="create a dispatch-api token")
    principal.add_argument("--id", required=True, help="principal id, e.g. tech-42")
    principal.add_argument("--role", required=True, choices=[r.value for r in Role])
    principal.add_argument(
        "--gateway", action="store_true", help="trusted to assert X-Actor-* (the bridge)"
    )
    principal.set_defaults(run=create_principal_command)
    why = commands.add_parser("why", help="a ticket's timeline: who changed what, why, with what")
    why.add_argument("ticket_id")
    queue = commands.add_parser("queue", help="tickets, with waiting time and SLA time left")
    queue.add_argument("--state", action="append", help="repeatable, e.g. READY_TO_SCHEDULE")
    sla = commands.add_parser("sla", help="tickets breaching or at risk of breaching now")
    tools = commands.add_parser("tools", help="failure ratio and latency per tool, calls in flight")
    for ops in (why, queue, sla, tools):
        ops.add_argument("--json", action="store_true", help="JSON for scripts")
        ops.set_defaults(ops=True)
    listed = commands.add_parser(
        "approvals", help="agents' calls waiting for a person, oldest first"
    )
    listed.add_argument(
        "--status",
        default="pending",
        choices=STATUSES,
        help="which approvals (default: pending)",
    )
    approve = commands.add_parser("approve", help="approve an agent's call: it runs now, once")
    approve.add_argument("approval_id")
    approve.add_argument("--reason", help="why (recorded on the ticket's timeline)")
    deny = commands.add_parser("deny", help="deny an agent's call: nothing is done")
    deny.add_argument("approval_id")
    deny.add_argument("--reason", required=True, help="why (the agent is told)")
    for decision in (listed, approve, deny):
        decision.add_argument("--json", action="store_true", help="JSON for scripts")
        decision.set_defaults(approvals_ops=True)
    return parser


async def _serve_api(config: Config, args: argparse.Namespace) -> int:
    settings = config.api
    if settings.database_url is None:
        raise CommandError("serve-api: set DISPATCH_DATABASE_URL (the PostgreSQL to serve)")
    observability("dispatch-api", config, database=True)
    dsn = settings.database_url.reveal()
    app = create_app(settings, dsn, log=JsonLog("dispatch-api", level=config.logging.level))
    await serve(
        [(app, settings.api_host, settings.api_port, start_draining_api)],
        drain_timeout_s=settings.drain_timeout_s,
        drain_delay_s=settings.drain_delay_s,
        limits=config.server,
        reserved_descriptors=settings.db_pool_max,
    )
    return 0


async def _serve_bridge(config: Config, args: argparse.Namespace) -> int:
    bridge = config.bridge()
    if bridge.gateway_token is None:
        raise SettingsError(
            "DISPATCH_GATEWAY_TOKEN: the bridge needs its dispatch-api token (a principal"
            " created with `dispatch-bridge create-principal --id bridge --role gateway --gateway`)"
        )
    observability("bridge", config, database=False)
    app = create_bridge_app(bridge, log=JsonLog("bridge", level=config.logging.level))
    await serve(
        [(app, bridge.host, bridge.port, start_draining)],
        drain_timeout_s=bridge.drain_timeout_s,
        drain_delay_s=bridge.drain_delay_s,
        limits=config.server,
        reserved_descriptors=bridge.api_max_connections,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
