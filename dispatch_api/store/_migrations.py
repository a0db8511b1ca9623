"""Ordered SQL migrations, recorded in `schema_migrations`.

All pending files apply in one transaction under a transaction-scoped advisory lock, so two
processes migrating at once serialise and the second finds nothing left to do.
"""

from __future__ import annotations

from importlib import resources

import asyncpg

# Any fixed 64-bit number; it only has to be the same in every process.
_MIGRATION_LOCK = 0x64697370_61746368


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) for every packaged migration, in order."""
    folder = resources.files("dispatch_api.migrations")
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(name.removesuffix(".sql"), folder.joinpath(name).read_text()) for name in names]


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply pending migrations; return the versions applied by this call."""
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, sql in migration_files():
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied_now.append(version)
    return applied_now
