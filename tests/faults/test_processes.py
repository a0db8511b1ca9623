"""Faults only real processes have: dispatch-api SIGKILLed between COMMIT and its reply,
PostgreSQL restarted under load, SIGTERM during load (to the bridge, to dispatch-api).

The services run as `dispatch-bridge serve-api` / `serve-bridge` child processes
(testkit.processes); the database is checked directly afterwards.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from dispatch_api.domain import Role
from dispatch_api.store import connect
from testkit.api import COMPLETE_TICKET, TECHNICIANS, ensure_technicians, upstream_tries, window
from testkit.fault_proxy import FaultProxy
from testkit.processes import ApiProcess, BridgeProcess, RestartablePostgres, new_token

#: A retry policy patient enough to outlast a dispatch-api restart within one tool call.
PATIENT_RETRY = {
    "max_attempts": 4,
    "per_try_timeout_s": 15.0,
    "deadline_s": 30.0,
    "base_backoff_s": 0.05,
    "max_backoff_s": 0.2,
}
DRAIN_TIMEOUT_S = 5.0
#: How long /readyz answers 503 before the listener closes (DISPATCH_DRAIN_DELAY_S).
DRAIN_DELAY_S = 1.0
DRAINING = {
    "DISPATCH_DRAIN_TIMEOUT_S": str(DRAIN_TIMEOUT_S),
    "DISPATCH_DRAIN_DELAY_S": str(DRAIN_DELAY_S),
}
#: No agent request waits longer than this (each test bounds its waits more tightly).
BOUND = aiohttp.ClientTimeout(total=40)


async def _fetch(database_url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await connect(database_url)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
        return rows
    finally:
        await conn.close()


def _metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found is not None, f"no {name} in /metrics"
    return float(found.group(1))


@dataclass
class Proxied:
    """dispatch-api (started by the test) behind a fault proxy the bridge calls through."""

    api: ApiProcess
    proxy: FaultProxy


@pytest.fixture
async def proxied(database_url: str, tmp_path: Path) -> AsyncIterator[Proxied]:
    api = ApiProcess(database_url, tmp_path)
    proxy = FaultProxy("127.0.0.1", api.port)
    await proxy.start()
    try:
        yield Proxied(api, proxy)
    finally:
        proxy.release()  # a test failing with a reply held must not hang the teardown
        await proxy.close()


#: The processes run on the wall clock: a window tomorrow is in their future.
WINDOW = window(
    first=datetime.now(UTC).replace(hour=13, minute=0, second=0, microsecond=0) + timedelta(days=1)
)


@pytest.fixture(autouse=True)
async def technicians_on_duty(database_url: str) -> None:
    """The technicians WINDOW books exist (scheduling refuses unknown ones)."""
    await ensure_technicians(database_url, *TECHNICIANS)


@pytest.fixture
async def gateway(database_url: str) -> str:
    """A gateway token for the bridge on the test's database."""
    return await new_token(database_url, "bridge", Role.GATEWAY, gateway=True)


# --- 3: dispatch-api SIGKILLed between COMMIT and the reply ----------------------------


async def test_a_reply_lost_to_a_killed_dispatch_api_is_replayed_by_its_restart(
    proxied: Proxied, gateway: str, database_url: str, tmp_path: Path
) -> None:
    api, proxy = proxied.api, proxied.proxy
    bridge = BridgeProcess(proxy.url, gateway, tmp_path, retry=PATIENT_RETRY)
    async with api, bridge, aiohttp.ClientSession(timeout=BOUND) as http:
        _, created = await bridge.invoke(http, "ticket.create", COMPLETE_TICKET)
        ticket_id = created["result"]["ticket"]["id"]
        before = proxy.requests
        proxy.hold()
        call = asyncio.create_task(
            bridge.invoke(http, "ticket.schedule", {"ticket_id": ticket_id, **WINDOW})
        )
        await asyncio.wait_for(proxy.holding.wait(), 10)  # committed; the reply is held
        api.kill()
        assert await api.wait(10) == -9
        await api.start()  # same port, same database
        proxy.cut()  # the held reply dies with its connection
        proxy.release()
        status, reply = await asyncio.wait_for(call, 30)
        async with http.get(api.url + "/metrics") as resp:
            metrics = await resp.text()
        attempts = [
            (line["attempt"], line["outcome"])
            for line in upstream_tries(bridge.log_lines())
            if line["request_id"] == reply.get("request_id")
        ]

    assert status == 200, reply
    assert reply["ok"] is True
    assert reply["result"]["ticket"]["state"] == "SCHEDULED"
    assert proxy.requests - before == 2  # the try whose reply was lost, and its retry
    assert attempts == [(1, "TransportFailure"), (2, "ok")]
    assert _metric(metrics, "idempotency_replay_total") == 1  # the restarted process replayed
    events = await _fetch(
        database_url,
        "SELECT type, request_id FROM timeline_events WHERE ticket_id = $1 ORDER BY seq",
        uuid.UUID(ticket_id),
    )
    assert [(e["type"], e["request_id"]) for e in events] == [
        ("created", created["request_id"]),
        ("scheduled", reply["request_id"]),
    ]
    keys = await _fetch(
        database_url, "SELECT status_code FROM idempotency_keys WHERE key = $1", reply["request_id"]
    )
    assert [k["status_code"] for k in keys] == [200]


# --- 6: PostgreSQL restarted mid-load -----------------------------------------------------


@pytest.fixture(scope="module")
async def restartable_pg() -> AsyncIterator[RestartablePostgres]:
    """A PostgreSQL server of this module's own: stopping it disturbs no other test."""
    # Not under pytest's tmp_path: when run as root, PostgreSQL runs as another user, and
    # pytest keeps its own temporary root private to the user running it.
    folder = Path(tempfile.mkdtemp(prefix="dispatch-faults-pg-"))
    server = RestartablePostgres(folder)
    try:
        await server.start()
        yield server
    finally:
        await server.close()
        await asyncio.to_thread(folder.rmdir)


@dataclass
class Writers:
    """Clients that create tickets, each under its own Idempotency-Key, and retry a 503, a
    409 or a lost connection with the same key, as the bridge does, until it succeeds."""

    http: aiohttp.ClientSession
    url: str
    token: str
    #: Idempotency-Key -> the id of the ticket the 201 named.
    acked: dict[str, str]
    #: Status of every failed try (0: no answer).
    failures: Counter[int]
    #: How long one key may keep failing: far beyond the lock timeout and the outage.
    patience_s: float = 20.0

    async def post(self, path: str, body: Any, key: str) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}", "Idempotency-Key": key}
        try:
            async with self.http.post(self.url + path, json=body, headers=headers) as resp:
                return resp.status, await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError):
            return 0, None

    async def until_done(self, path: str, body: Any, key: str) -> tuple[int, Any]:
        give_up = time.monotonic() + self.patience_s
        while True:
            status, answer = await self.post(path, body, key)
            if status not in (0, 409, 503):
                return status, answer
            self.failures[status] += 1
            assert time.monotonic() < give_up, f"key {key} still failing: {status} {answer}"
            await asyncio.sleep(0.05)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            key = str(uuid.uuid4())
            status, answer = await self.until_done("/v1/tickets", COMPLETE_TICKET, key)
            assert status == 201, answer
            self.acked[key] = answer["ticket"]["id"]


async def _wait_for_lock_waiters(database_url: str, count: int) -> None:
    """Until `count` sessions of the database wait for a lock (seen from a session of its
    own: pg_stat_activity stays the same for the whole of a transaction)."""
    conn = await connect(database_url)
    try:
        for _ in range(500):
            waiting = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if waiting >= count:
                return
            await asyncio.sleep(0.01)
    finally:
        await conn.close()
    raise TimeoutError(f"{count} requests did not come to wait for the locked ticket")


async def test_a_postgres_restart_mid_load_loses_no_write_doubles_none_and_sticks_no_key(
    restartable_pg: RestartablePostgres, tmp_path: Path
) -> None:
    url = await restartable_pg.new_database()
    # The gateway, as the bridge calls: its Idempotency-Key is the request_id the timeline
    # records, so each event is traced back to the key that made it.
    token = await new_token(url, "bridge", Role.GATEWAY, gateway=True)
    await ensure_technicians(url, *TECHNICIANS)
    api = ApiProcess(url, tmp_path, env={"DISPATCH_DB_LOCK_TIMEOUT_MS": "3000"})
    acked: dict[str, str] = {}
    failures: Counter[int] = Counter()
    timeout = aiohttp.ClientTimeout(total=10)
    async with api, aiohttp.ClientSession(timeout=timeout) as http:
        writers = Writers(http, api.url, token, acked, failures)
        pid = api.pid
        _, setup = await writers.until_done("/v1/tickets", COMPLETE_TICKET, "setup")
        ticket_id = setup["ticket"]["id"]
        stop = asyncio.Event()
        running = [asyncio.create_task(writers.run(stop)) for _ in range(6)]
        try:
            await asyncio.sleep(0.5)
            # One transaction surely in flight at the stop: a schedule waiting for the
            # ticket's row lock, which this session holds (after claiming its key).
            locker = await asyncpg.connect(url)
            try:
                await locker.execute("BEGIN")
                await locker.execute(
                    "SELECT 1 FROM tickets WHERE id = $1 FOR UPDATE", uuid.UUID(ticket_id)
                )
                path = f"/v1/tickets/{ticket_id}/schedule"
                blocked = asyncio.create_task(writers.post(path, WINDOW, "blocked"))
                await _wait_for_lock_waiters(url, 1)
                await restartable_pg.stop("fast")
            finally:
                locker.terminate()
            first = await asyncio.wait_for(blocked, 10)
            await asyncio.sleep(1.0)  # the outage: writers see 503s
            await restartable_pg.start()
            await asyncio.sleep(1.0)  # and after it, the pool recovers
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*running), 40)
        retried = await writers.until_done(path, WINDOW, "blocked")
        async with http.get(api.url + "/readyz") as resp:
            ready = resp.status
        _, fresh = await writers.until_done("/v1/tickets", COMPLETE_TICKET, "after")
        assert api.running  # recovered without a restart
        assert api.pid == pid

    assert first[0] == 503, first
    assert first[1]["code"] == "database_unavailable"
    assert retried[0] == 200, retried
    assert retried[1]["ticket"]["state"] == "SCHEDULED"
    assert ready == 200
    assert fresh["ticket"]["state"] == "READY_TO_SCHEDULE"
    assert failures[503] > 0  # the outage was seen
    assert len(acked) > 10
    created = await _fetch(
        url, "SELECT request_id, ticket_id FROM timeline_events WHERE type = 'created'"
    )
    by_key = Counter(e["request_id"] for e in created)
    assert {k: n for k, n in by_key.items() if n != 1} == {}  # nothing applied twice
    ids = {e["request_id"]: str(e["ticket_id"]) for e in created}
    assert {k: ids.get(k) for k in acked} == acked  # every acknowledged create, as answered
    assert set(by_key) == {*acked, "setup", "after"}  # and nothing unacknowledged
    scheduled = await _fetch(url, "SELECT request_id FROM timeline_events WHERE type = 'scheduled'")
    assert [e["request_id"] for e in scheduled] == ["blocked"]
    stuck = await _fetch(url, "SELECT key FROM idempotency_keys WHERE status_code IS NULL")
    assert stuck == []


# --- 9: SIGTERM during load -----------------------------------------------------------


@dataclass
class Call:
    marker: str
    start: float
    end: float
    #: "ok", a tool error code, "refused" (no connection) or "no_answer".
    outcome: str
    ticket_id: str | None = None


async def _agent(
    bridge: BridgeProcess, http: aiohttp.ClientSession, name: str, calls: list[Call]
) -> None:
    """Creates tickets one after another until the bridge refuses connections."""
    for n in range(10_000):
        marker = f"{name}-{n}"
        start = time.monotonic()
        ticket_id = None
        try:
            _, envelope = await bridge.invoke(
                http, "ticket.create", {**COMPLETE_TICKET, "customer_name": marker}
            )
            if envelope["ok"]:
                outcome, ticket_id = "ok", envelope["result"]["ticket"]["id"]
            else:
                outcome = envelope["error"]["code"]
        except aiohttp.ClientConnectorError:
            outcome = "refused"
        except (aiohttp.ClientError, TimeoutError):
            outcome = "no_answer"
        calls.append(Call(marker, start, time.monotonic(), outcome, ticket_id))
        if outcome == "refused":
            return


async def _readiness_after(url: str, signalled: float, bound_s: float) -> list[str]:
    """Poll /readyz on fresh connections until the listener closes: what each poll said,
    "ready", "draining" (503 saying so) or another status."""
    seen: list[str] = []
    # A poll that overtakes the signal probes dispatch-api (through a slow proxy here): give
    # it time on a loaded machine; a hung poll still fails the test.
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        while time.monotonic() - signalled < bound_s:
            try:
                async with http.get(url + "/readyz", headers={"Connection": "close"}) as resp:
                    body = await resp.json(content_type=None)
            except aiohttp.ClientConnectionError:
                # Refused, or accepted just before the listener closed and then closed
                # unanswered with the other idle connections: no longer serving.
                return seen
            # The bridge says {"draining": true}; dispatch-api, a problem coded "draining".
            draining = body.get("draining") is True or body.get("code") == "draining"
            if resp.status == 503 and draining:
                seen.append("draining")
            else:
                seen.append("ready" if resp.status == 200 else str(resp.status))
            await asyncio.sleep(0.05)
    raise AssertionError(f"still listening {bound_s}s after SIGTERM: {seen}")


def _not_ready_from_the_signal_on(seen: list[str]) -> bool:
    """Draining once the process has handled the signal, until the listener closed (the
    first poll may overtake the signal by a hair, and still find it ready)."""
    return "draining" in seen and set(seen[1:]) <= {"draining"}


async def test_sigterm_to_the_bridge_flips_readiness_first_and_loses_no_acknowledged_call(
    proxied: Proxied, gateway: str, database_url: str, tmp_path: Path
) -> None:
    api, proxy = proxied.api, proxied.proxy
    proxy.delay_s = 0.3  # every call spends a while in flight
    bridge = BridgeProcess(proxy.url, gateway, tmp_path, env=DRAINING)
    calls: list[Call] = []
    timeout = aiohttp.ClientTimeout(total=20)
    async with api, bridge, aiohttp.ClientSession(timeout=timeout) as http:
        agents = [asyncio.create_task(_agent(bridge, http, f"agent{i}", calls)) for i in range(6)]
        await asyncio.sleep(1.0)
        signalled = time.monotonic()
        bridge.terminate()
        readiness = await _readiness_after(bridge.url, signalled, DRAIN_DELAY_S + 3)
        code = await bridge.wait(DRAIN_DELAY_S + DRAIN_TIMEOUT_S + 5)
        exited = time.monotonic() - signalled
        await asyncio.wait_for(asyncio.gather(*agents), 10)

    assert code == 0
    assert exited < DRAIN_DELAY_S + DRAIN_TIMEOUT_S + 2
    assert _not_ready_from_the_signal_on(readiness), readiness
    assert all(c.end - c.start < DRAIN_TIMEOUT_S + 2 for c in calls)  # nothing hung
    in_flight = [c for c in calls if c.start < signalled < c.end]
    assert in_flight
    assert {c.outcome for c in in_flight} == {"ok"}  # drained, answered
    # "no_answer": a request sent on a kept-alive connection as the drain closed it.
    assert {c.outcome for c in calls} <= {"ok", "refused", "no_answer"}
    rows = await _fetch(database_url, "SELECT id, customer_name FROM tickets")
    stored = {r["customer_name"]: str(r["id"]) for r in rows}
    acknowledged = {c.marker: c.ticket_id for c in calls if c.outcome == "ok"}
    assert stored == acknowledged  # no acknowledged write lost, none applied unanswered


async def test_a_call_outlasting_the_drain_is_answered_in_time_and_redelivered_once(
    proxied: Proxied, gateway: str, database_url: str, tmp_path: Path
) -> None:
    api, proxy = proxied.api, proxied.proxy
    drain_s = 2.0
    bridge = BridgeProcess(
        proxy.url, gateway, tmp_path, retry=PATIENT_RETRY, env={"DISPATCH_DRAIN_TIMEOUT_S": "2"}
    )
    arguments = {**COMPLETE_TICKET, "customer_name": "Outlasting the drain"}
    async with api, bridge, aiohttp.ClientSession(timeout=BOUND) as http:
        proxy.hold()  # dispatch-api commits; its answer waits at the proxy
        call = asyncio.create_task(
            bridge.invoke(http, "ticket.create", arguments, tool_call_id="call-1")
        )
        await asyncio.wait_for(proxy.holding.wait(), 10)
        signalled = time.monotonic()
        bridge.terminate()
        status, cut_short = await asyncio.wait_for(call, drain_s + 3)
        answered = time.monotonic() - signalled
        code = await bridge.wait(drain_s + 3)
        proxy.release()
        await bridge.start()
        _, redelivered = await bridge.invoke(
            http, "ticket.create", arguments, tool_call_id="call-1"
        )

    assert code == 0
    assert answered < drain_s + 1  # an answer within the drain bound, not a cut connection
    assert status == 504
    assert cut_short["error"]["code"] == "deadline_exceeded"
    assert cut_short["error"]["retryable"] is True
    # dispatch-api had committed: the cut answer must not claim that nothing happened.
    assert cut_short["error"]["details"] == {"reason": "bridge_draining", "outcome": "unknown"}
    assert redelivered["ok"] is True  # the same call again: the one outcome, replayed
    assert redelivered["replayed"] is True
    assert redelivered["request_id"] == cut_short["request_id"]
    tickets = await _fetch(database_url, "SELECT id FROM tickets")
    assert [str(t["id"]) for t in tickets] == [redelivered["result"]["ticket"]["id"]]


async def test_sigterm_to_dispatch_api_flips_readiness_and_finishes_requests_in_flight(
    gateway: str, database_url: str, tmp_path: Path
) -> None:
    api = ApiProcess(
        database_url, tmp_path, env={**DRAINING, "DISPATCH_DB_LOCK_TIMEOUT_MS": "8000"}
    )
    bridge = BridgeProcess(api.url, gateway, tmp_path, retry=PATIENT_RETRY)
    async with api, bridge, aiohttp.ClientSession(timeout=BOUND) as http:
        _, created = await bridge.invoke(http, "ticket.create", COMPLETE_TICKET)
        ticket_id = created["result"]["ticket"]["id"]
        locker = await connect(database_url)
        try:
            # Requests in flight at the signal: they wait for the ticket's row lock.
            await locker.execute("BEGIN")
            await locker.execute(
                "SELECT 1 FROM tickets WHERE id = $1 FOR UPDATE", uuid.UUID(ticket_id)
            )
            about = {"ticket_id": ticket_id}
            in_flight = [
                asyncio.create_task(bridge.invoke(http, "ticket.schedule", {**about, **WINDOW}))
                for _ in range(2)
            ]
            await _wait_for_lock_waiters(database_url, 2)
            signalled = time.monotonic()
            api.terminate()
            readiness = await _readiness_after(api.url, signalled, DRAIN_DELAY_S + 3)
            await locker.execute("ROLLBACK")  # the requests in flight may go on now
        finally:
            await locker.close()
        answers = await asyncio.wait_for(asyncio.gather(*in_flight), DRAIN_TIMEOUT_S + 2)
        code = await api.wait(DRAIN_DELAY_S + DRAIN_TIMEOUT_S + 5)
        _, after = await bridge.invoke(http, "ticket.get", about)
        tries = Counter(
            (line["request_id"], line["outcome"]) for line in upstream_tries(bridge.log_lines())
        )

    assert code == 0
    assert _not_ready_from_the_signal_on(readiness), readiness
    assert [(status, envelope["ok"]) for status, envelope in answers] == [(200, True)] * 2
    for _, envelope in answers:  # each answered by the request in flight, not by a retry
        assert tries[(envelope["request_id"], "ok")] == 1
        assert sum(n for (rid, _), n in tries.items() if rid == envelope["request_id"]) == 1
    events = await _fetch(
        database_url,
        "SELECT type, request_id FROM timeline_events WHERE ticket_id = $1 ORDER BY seq",
        uuid.UUID(ticket_id),
    )
    assert sorted(e["request_id"] for e in events[1:]) == sorted(
        envelope["request_id"] for _, envelope in answers
    )
    assert after["ok"] is False
    assert after["error"]["code"] == "upstream_unavailable"
