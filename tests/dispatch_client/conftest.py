from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import aioresponses.core
import pytest
from aioresponses import aioresponses as mocked_http

from .fakes import FakeClock, FakeSleep, Harness, MockedResponse


@pytest.fixture
async def harness(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    """A real ClientSession whose requests aioresponses answers; a fake clock and sleep."""
    monkeypatch.setattr(aioresponses.core, "ClientResponse", MockedResponse)
    clock = FakeClock()
    with mocked_http() as mock:
        async with aiohttp.ClientSession() as session:
            yield Harness(session, mock, clock, FakeSleep(clock))
