"""A database outage is a 503 an agent can retry, never a 500; the pool recovers after."""

from __future__ import annotations

from urllib.parse import urlsplit

import asyncpg

from testkit.api import Api


async def _set_accepting(api: Api, pg_server_url: str, accepting: bool) -> None:
    name = urlsplit(api.database_url).path.lstrip("/")
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS {str(accepting).lower()}")
        if not accepting:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )
    finally:
        await admin.close()


async def test_reads_and_writes_answer_503_while_the_database_is_away_and_recover(
    api: Api, pg_server_url: str
) -> None:
    ticket = await api.create_ticket()
    await _set_accepting(api, pg_server_url, False)
    try:
        read = await api.request("GET", f"/v1/tickets/{ticket['id']}")
        write = await api.act(ticket["id"], "cancel", {"reason": "duplicate"})
        ready = await api.request("GET", "/readyz", as_="")
    finally:
        await _set_accepting(api, pg_server_url, True)

    for reply in (read, write, ready):
        assert reply.status == 503, reply.body
        assert reply.content_type == "application/problem+json"
        assert reply.body["code"] == "database_unavailable"
    assert read.headers["Retry-After"] == write.headers["Retry-After"] == "1"

    recovered = await api.request("GET", f"/v1/tickets/{ticket['id']}")
    assert recovered.status == 200
    assert recovered.body["state"] == "READY_TO_SCHEDULE"


async def test_readiness_turns_503_once_shutdown_begins(api: Api) -> None:
    assert api.app is not None
    ready = await api.request("GET", "/readyz", as_="")

    await api.app.shutdown()  # what the runner does once the listener has closed
    draining = await api.request("GET", "/readyz", as_="")

    assert ready.status == 200
    assert draining.status == 503
    assert draining.body["code"] == "draining"
