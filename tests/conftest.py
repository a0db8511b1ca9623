"""Real PostgreSQL for the suite: one embedded server per session (or
DISPATCH_TEST_DATABASE_URL), a migrated template database, and a fresh copy per test."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dispatch_api.store import connect, migrate, start_embedded, templates
from telemetry import TracingSettings, configure_tracing, instrument_database

# The dispatch-api harness (the `api` fixture and friends) serves every test package.
pytest_plugins = ["testkit.api"]


def database_url_for(server_url: str, database: str) -> str:
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture(scope="session", autouse=True)
def spans() -> InMemorySpanExporter:
    """Tracing as in production (one global provider, asyncpg instrumented), exporting to
    memory so tests can read the spans."""
    exporter = InMemorySpanExporter()
    configure_tracing(
        TracingSettings(sampling_ratio=1.0),
        "dispatch-tests",
        processor=SimpleSpanProcessor(exporter),
    )
    instrument_database()
    return exporter


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    url = os.environ.get("DISPATCH_TEST_DATABASE_URL")
    if url:
        yield url
        return
    folder = Path(tempfile.mkdtemp(prefix="dispatch-test-pg-"))
    # The server stops (and its files go) when the test process exits.
    yield start_embedded(folder / "pg", delete_on_exit=True)


@pytest.fixture(scope="session")
async def template_database(pg_server_url: str) -> AsyncIterator[str]:
    name = f"dispatch_template_{os.getpid()}"
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name}")
        await admin.execute(f"CREATE DATABASE {name}")
        conn = await connect(database_url_for(pg_server_url, name))
        try:
            await migrate(conn)
            await templates.seed(conn, templates.read_template_file(None))
        finally:
            await conn.close()
        yield name
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@asynccontextmanager
async def _scratch_database(server_url: str, prefix: str, template: str) -> AsyncIterator[str]:
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
        yield database_url_for(server_url, name)
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def database_url(pg_server_url: str, template_database: str) -> AsyncIterator[str]:
    """A migrated, seeded database of this test's own."""
    async with _scratch_database(pg_server_url, "dispatch_test", template_database) as url:
        yield url


@pytest.fixture
async def empty_database_url(pg_server_url: str) -> AsyncIterator[str]:
    """A database with no tables at all (for migration tests)."""
    async with _scratch_database(pg_server_url, "dispatch_empty", "template0") as url:
        yield url
