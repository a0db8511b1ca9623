"""dispatch-api /metrics: DESIGN section 6 names, exact values, bounded labels, promtool-clean,
and a `tickets_in_state` gauge that tells the database's truth on every replica."""

from __future__ import annotations

import asyncio
import math
import re
import secrets
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager

import aiohttp
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from dispatch_api.domain import Priority, State
from dispatch_api.settings import ApiSettings
from dispatch_api.store import connect
from dispatch_api.web import create_app
from telemetry import LATENCY_BUCKETS_MS, JsonLog
from testkit.api import COMPLETE_TICKET, WINDOW, Api, Reply, window

PROMTOOL = "/usr/bin/promtool"
#: promtool's only complaint DESIGN section 6 imposes: the name must say milliseconds ("_ms").
DESIGN_MANDATED_LINT = {
    "dispatch_api_latency_ms metric names should not contain abbreviated units",
}
UUID_LIKE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
ACTION_ROUTE = "/v1/tickets/{ticket_id}/"
#: 1 ms to 30 s (DESIGN: latency in milliseconds).
BUCKETS_MS = [1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000]

Labels = tuple[tuple[str, str], ...]
Series = dict[tuple[str, Labels], float]


def parse(exposition: str) -> Series:
    """Every sample of an exposition: (sample name, sorted labels) -> value."""
    series: Series = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in series, f"duplicate sample {key}"
            series[key] = sample.value
    return series


def by_labels(series: Series, name: str, *keys: str) -> dict[tuple[str, ...], float]:
    """The samples called `name`, keyed by the values of labels `keys` (in that order)."""
    found: dict[tuple[str, ...], float] = {}
    for (sample, labels), value in series.items():
        if sample == name:
            as_dict = dict(labels)
            assert set(as_dict) == set(keys), f"{name} has labels {sorted(as_dict)}"
            found[tuple(as_dict[k] for k in keys)] = value
    return found


def one(series: Series, name: str, labels: Mapping[str, str] | None = None) -> float:
    key = (name, tuple(sorted((labels or {}).items())))
    assert key in series, f"no sample {key}"
    return series[key]


async def scrape(api: Api) -> tuple[Series, bytes]:
    reply = await api.request("GET", "/metrics", as_="")
    assert reply.status == 200, reply.raw[:500]
    assert reply.content_type == "text/plain"
    return parse(reply.raw.decode()), reply.raw


def label_values(series: Series) -> set[str]:
    return {value for _, labels in series for _, value in labels}


def histogram_buckets(series: Series, name: str, label: str) -> dict[str, list[float]]:
    """label value -> the `le` bounds of its buckets, in exposition order."""
    bounds: dict[str, list[float]] = {}
    for (sample, labels), _ in series.items():
        if sample == f"{name}_bucket":
            as_dict = dict(labels)
            bounds.setdefault(as_dict[label], []).append(float(as_dict["le"]))
    return bounds


async def promtool_check(exposition: bytes) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        PROMTOOL,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await proc.communicate(exposition)
    assert proc.returncode is not None
    return proc.returncode, output.decode()


async def in_batches(calls: list[Callable[[], Awaitable[object]]], size: int = 100) -> None:
    """Run the zero-argument coroutine factories `size` at a time."""
    for start in range(0, len(calls), size):
        await asyncio.gather(*(call() for call in calls[start : start + size]))


async def test_metrics_exposes_every_design_name_and_counts_a_ticket_life_exactly(
    api: Api,
) -> None:
    before, _ = await scrape(api)
    key = str(uuid.uuid4())
    created = await api.request("POST", "/v1/tickets", json=COMPLETE_TICKET, key=key)
    replayed = await api.request("POST", "/v1/tickets", json=COMPLETE_TICKET, key=key)
    other = {**COMPLETE_TICKET, "customer_name": "Someone Else"}
    conflict = await api.request("POST", "/v1/tickets", json=other, key=key)
    tid = created.body["ticket"]["id"]
    steps = [
        await api.act(tid, action, body)
        for action, body in (("schedule", WINDOW), ("dispatch", None), ("arrive", None))
    ]
    rejected = await api.act(tid, "complete")
    missing = await api.request("GET", f"/v1/tickets/{uuid.uuid4()}")

    series, _ = await scrape(api)

    assert created.status == replayed.status == 201
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert (conflict.status, conflict.body["code"]) == (422, "idempotency_conflict")
    assert [s.status for s in steps] == [200, 200, 200]
    assert (rejected.status, rejected.body["code"]) == (422, "evidence_missing")
    assert (missing.status, missing.body["code"]) == (404, "ticket_not_found")
    # Before any traffic: every series an alert watches exists, at zero.
    assert by_labels(before, "tickets_in_state", "state") == {(str(s),): 0.0 for s in State}
    assert by_labels(before, "sla_breach_total", "priority") == {(str(p),): 0.0 for p in Priority}
    assert one(before, "tickets_created_total") == 0.0
    assert one(before, "idempotency_replay_total") == 0.0
    assert one(before, "idempotency_conflict_total") == 0.0
    # After: exactly what happened, the replay counted as a replay and not as a second ticket.
    assert one(series, "tickets_created_total") == 1.0
    assert one(series, "idempotency_replay_total") == 1.0
    assert one(series, "idempotency_conflict_total") == 1.0
    assert by_labels(series, "state_transitions_total", "from", "to") == {
        ("READY_TO_SCHEDULE", "SCHEDULED"): 1.0,
        ("SCHEDULED", "DISPATCHED"): 1.0,
        ("DISPATCHED", "ON_SITE"): 1.0,
    }  # the refused completion is no transition
    assert by_labels(series, "dispatch_api_errors_total", "type") == {
        ("idempotency_conflict",): 1.0,
        ("evidence_missing",): 1.0,
        ("ticket_not_found",): 1.0,
    }
    in_state = by_labels(series, "tickets_in_state", "state")
    assert in_state == {(str(s),): 1.0 if s is State.ON_SITE else 0.0 for s in State}
    assert by_labels(series, "sla_breach_total", "priority") == {(str(p),): 0.0 for p in Priority}
    requests = by_labels(series, "dispatch_api_requests_total", "route", "code")
    assert requests == {
        ("/metrics", "200"): 1.0,  # the scrape before; a scrape is counted once it answered
        ("/v1/tickets", "201"): 2.0,
        ("/v1/tickets", "422"): 1.0,
        (ACTION_ROUTE + "schedule", "200"): 1.0,
        (ACTION_ROUTE + "dispatch", "200"): 1.0,
        (ACTION_ROUTE + "arrive", "200"): 1.0,
        (ACTION_ROUTE + "complete", "422"): 1.0,
        ("/v1/tickets/{ticket_id}", "404"): 1.0,
    }
    per_route: Counter[str] = Counter()
    for (route, _), n in requests.items():
        per_route[route] += int(n)
    buckets = histogram_buckets(series, "dispatch_api_latency_ms", "route")
    assert set(buckets) == set(per_route)
    for route, bounds in buckets.items():
        assert bounds == [*LATENCY_BUCKETS_MS, math.inf] == [*BUCKETS_MS, math.inf], route
        assert (
            one(series, "dispatch_api_latency_ms_bucket", {"route": route, "le": "+Inf"})
            == (one(series, "dispatch_api_latency_ms_count", {"route": route}))
            == per_route[route]
        )
    assert not any(tid in value or UUID_LIKE.search(value) for value in label_values(series))


async def test_random_paths_leave_the_series_count_flat_and_never_become_labels(
    api: Api,
) -> None:
    tokens: list[str] = []

    def token() -> str:
        word = "zq" + secrets.token_hex(5)
        tokens.append(word)
        return word

    def fresh_uuid() -> str:
        value = str(uuid.uuid4())
        tokens.append(value)
        return value

    def random_request(i: int) -> Callable[[], Awaitable[Reply]]:
        kind = i % 6
        if kind == 0:
            method, path = "GET", f"/v1/tickets/{fresh_uuid()}/{token()}"
        elif kind == 1:
            method, path = "GET", f"/random/{secrets.randbelow(10**9)}{token()}"
        elif kind == 2:
            method, path = "GET", f"/v1/tickets/{fresh_uuid()}"
        elif kind == 3:
            method, path = "GET", f"/v1/tickets/{token()}"
        elif kind == 4:
            method, path = "POST", f"/v1/tickets/{fresh_uuid()}/{token()}"
        else:
            method, path = "DELETE", f"/v1/tickets/{fresh_uuid()}"

        async def call() -> Reply:
            reply = await api.request(method, path, json={} if method == "POST" else None)
            assert 400 <= reply.status < 500, (method, path, reply.status, reply.body)
            return reply

        return call

    await scrape(api)  # the /metrics route's own series exist from here on
    await in_batches([random_request(i) for i in range(50)])
    warm, _ = await scrape(api)
    await in_batches([random_request(i) for i in range(50, 2050)])
    after, _ = await scrape(api)

    assert len(after) == len(warm), sorted(set(after) - set(warm))
    assert set(after) == set(warm)
    assert sum(by_labels(after, "dispatch_api_requests_total", "route", "code").values()) == 2052
    routes = {
        route for route, _ in by_labels(after, "dispatch_api_requests_total", "route", "code")
    }
    assert routes == {"/metrics", "unmatched", "/v1/tickets/{ticket_id}"}
    errors = set(by_labels(after, "dispatch_api_errors_total", "type"))
    assert errors == {
        ("route_not_found",),
        ("ticket_not_found",),
        ("invalid_id",),
        ("method_not_allowed",),
    }
    values = label_values(after)
    leaked = {v for v in values if UUID_LIKE.search(v) or any(t in v for t in tokens)}
    assert not leaked


async def test_promtool_accepts_the_exposition_after_traffic(api: Api) -> None:
    ticket = await api.create_ticket()
    key = str(uuid.uuid4())
    await api.act(ticket["id"], "schedule", WINDOW, key=key)
    await api.act(ticket["id"], "schedule", WINDOW, key=key)  # a replay
    await api.act(ticket["id"], "cancel", {"reason": "duplicate"}, key=key)  # a conflict
    await api.request("GET", f"/v1/tickets/{uuid.uuid4()}/nowhere")
    await scrape(api)
    _, exposition = await scrape(api)

    code, output = await promtool_check(exposition)

    findings = {line.strip() for line in output.splitlines() if line.strip()}
    # Exit 1 is a parse error; exit 3 means lint findings only, and the only one allowed is
    # the `_ms` unit the DESIGN names require.
    assert findings <= DESIGN_MANDATED_LINT, output
    assert code == (3 if findings else 0), f"promtool exit {code}:\n{output}"
    assert b"state_transitions_total{" in exposition
    assert b"dispatch_api_errors_total{" in exposition


@asynccontextmanager
async def replica(api: Api, log_lines: list[bytes]) -> AsyncIterator[Api]:
    """Another dispatch-api process on the same database, as the same principals see it."""
    app = create_app(
        ApiSettings(db_pool_min=1, db_pool_max=4, metrics_refresh_s=0),  # exact at each scrape
        api.database_url,
        clock=api.clock,
        log=JsonLog("dispatch-api", sink=log_lines.append),
    )
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession(base_url=str(server.make_url(""))) as session:
            yield Api(session, api.database_url, api.clock, api.tokens)
    finally:
        await server.close()


async def database_truth(api: Api) -> dict[tuple[str, ...], float]:
    conn = await connect(api.database_url)
    try:
        rows = await conn.fetch("SELECT state, count(*) AS n FROM tickets GROUP BY state")
    finally:
        await conn.close()
    counts = {str(r["state"]): float(r["n"]) for r in rows}
    return {(str(s),): counts.get(str(s), 0.0) for s in State}


async def test_tickets_in_state_is_the_database_truth_on_every_replica_and_after_a_restart(
    api: Api, log_lines: list[bytes]
) -> None:
    async with replica(api, log_lines) as other:
        first = await api.create_ticket()
        second = await other.create_ticket()
        third = await api.create_ticket(priority="P1")
        fourth = await other.create_ticket()
        partial = {k: v for k, v in COMPLETE_TICKET.items() if k != "site_address"}
        draft = await api.request("POST", "/v1/tickets", json=partial)
        assert (draft.status, draft.body["ticket"]["state"]) == (201, "NEW")
        early = [await scrape(app) for app in (api, other)]
        early_truth = await database_truth(api)
        replies = [
            await other.act(first["id"], "schedule", WINDOW),
            await api.act(first["id"], "dispatch"),
            await other.act(first["id"], "arrive"),
            await api.act(second["id"], "schedule", window(1)),
            await other.act(second["id"], "hold", {"cause": "customer", "reason": "away"}),
            await api.act(third["id"], "cancel", {"reason": "duplicate"}),
            await other.act(fourth["id"], "schedule", window(2)),
        ]
        assert [r.status for r in replies] == [200] * len(replies), [r.body for r in replies]

        here, _ = await scrape(api)
        there, _ = await scrape(other)
        truth = await database_truth(api)

        async with replica(api, log_lines) as restarted:
            fresh, _ = await scrape(restarted)

    assert early_truth[("READY_TO_SCHEDULE",)] == 4.0
    for series, _ in early:  # each replica, at each scrape, and states that drop to zero too
        assert by_labels(series, "tickets_in_state", "state") == early_truth
    assert truth == {
        ("NEW",): 1.0,
        ("READY_TO_SCHEDULE",): 0.0,
        ("SCHEDULED",): 1.0,
        ("DISPATCHED",): 0.0,
        ("ON_SITE",): 1.0,
        ("ON_HOLD",): 1.0,
        ("COMPLETED",): 0.0,
        ("CANCELLED",): 1.0,
    }
    assert by_labels(here, "tickets_in_state", "state") == truth
    assert by_labels(there, "tickets_in_state", "state") == truth
    assert by_labels(fresh, "tickets_in_state", "state") == truth
    # The counters, unlike the gauge, are each process's own: 3 + 2 creations, none restarted.
    assert one(here, "tickets_created_total") == 3.0
    assert one(there, "tickets_created_total") == 2.0
    assert one(fresh, "tickets_created_total") == 0.0
