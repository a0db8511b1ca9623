"""dispatch-api tests use the harness in testkit/api.py (registered in tests/conftest.py);
the store's own tests take a connection to their fresh database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from dispatch_api.store import connect


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    c = await connect(database_url)
    try:
        yield c
    finally:
        await c.close()
