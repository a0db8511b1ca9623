"""A Jepsen-style history check: concurrent agents call mutating tools through faults 3-6,
then the database is read to prove no acknowledged call was lost, none applied twice, and
every call ended within its deadline.

Faults, all during one run: (3) answers lost after dispatch-api committed (the bridge-side
proxy drops them), (4) requests lost before they arrive (reset), (5) answers slower than
the per-try timeout but within the deadline, and (6) every PostgreSQL connection of
dispatch-api cut at once, a few times (a second proxy sits between dispatch-api and the
embedded server).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import pytest

from dispatch_api.settings import ApiSettings
from dispatch_client import BreakerConfig, BudgetConfig, RetryConfig, RetryPolicy
from testkit.agents import Endpoint, run_agents
from testkit.api import parsed_logs
from testkit.approvals import without_approvals
from testkit.fault_proxy import FaultProxy
from testkit.history import NO_ANSWER, check
from testkit.pg_proxy import server_proxy, through
from tests.bridge.conftest import Bridge
from tests.conftest import database_url_for

SEED = 20261127
AGENTS = 12
SECONDS = 15.0
PG_CUTS = 4
FAULT_RATE = 0.15
#: Short tries under a deadline of a few seconds; the injected delay (fault 5) is longer
#: than one try. Two tries only, so that some calls fail for the agent to re-deliver; a
#: budget and breaker loose enough for a 15 % fault rate, not disabled.
RETRY = RetryConfig(
    default=RetryPolicy(
        max_attempts=2,
        per_try_timeout_s=0.4,
        deadline_s=3.0,
        base_backoff_s=0.02,
        max_backoff_s=0.2,
    ),
    budget=BudgetConfig(ratio=0.5, min_retries_per_s=5.0, max_tokens=20.0),
    breaker=BreakerConfig(failure_threshold=20, open_s=0.5),
)
SLOW_ANSWER_S = 0.6
#: What a call may take beyond its deadline: the bridge's own work and the HTTP answer.
SLACK_S = 1.0
#: Every outcome an agent may see here; anything else (internal, upstream_error, a 5xx
#: problem, idempotency_conflict, ...) is a bug the faults uncovered.
EXPECTED_OUTCOMES = {
    "ok",
    "invalid_transition",
    "in_progress",
    # The faults slow calls down, so the bridge's adaptive in-flight limit falls (to its
    # floor, 8, below these 12 agents of one key) and refuses the excess: outcome none,
    # which the check holds against the database, and the agent re-delivers.
    "rate_limited",
    "upstream_timeout",
    "upstream_unavailable",
    "deadline_exceeded",
    NO_ANSWER,
}


@pytest.fixture
def bridge_retry() -> RetryConfig:
    return RETRY


@pytest.fixture
def api_settings(api_settings: ApiSettings) -> ApiSettings:
    # The simulated agents cancel each ticket they finish: this history is about faults, so
    # nobody is asked to approve (gated calls in a history are issue 18's own check).
    return without_approvals(api_settings)


@pytest.fixture
def bridge_overrides() -> dict[str, Any]:
    # Every simulated agent shares one key: its rate limit must not be what refuses them.
    return {"rate_limit_per_s": 100_000.0, "rate_limit_burst": 100_000}


@pytest.fixture
async def pg_proxy(pg_server_url: str) -> AsyncIterator[FaultProxy]:
    proxy = server_proxy(pg_server_url)
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture
def database_url(database_url: str, pg_proxy: FaultProxy) -> str:
    """This test's database, reached through `pg_proxy`: dispatch-api's pool lives there."""
    return through(pg_proxy, database_url)


async def _cut_repeatedly(proxy: FaultProxy, times: int, every_s: float) -> None:
    """Cut every connection `times` times, `every_s` apart, as a lost database would."""
    for _ in range(times):
        await asyncio.sleep(every_s)
        proxy.cut()


def _count(lines: list[dict[str, Any]], **match: Any) -> int:
    return sum(1 for line in lines if all(line.get(k) == v for k, v in match.items()))


async def _metric(bridge: Bridge, service: str, pattern: str) -> float:
    """The sum of the samples matching `pattern` on a service's /metrics."""
    if service == "bridge":
        reply = await bridge.request("GET", "/metrics", as_="")
    else:
        reply = await bridge.api.request("GET", "/metrics", as_="")
    assert reply.status == 200
    found = re.findall(rf"^{pattern} (\S+)$", reply.raw.decode(), re.M)
    return sum(float(v) for v in found)


async def test_no_acknowledged_call_is_lost_or_doubled_through_faults_3_to_6(
    bridge: Bridge,
    pg_proxy: FaultProxy,
    pg_server_url: str,
    database_url: str,
    log_lines: list[bytes],
    record_property: Callable[[str, object], None],
) -> None:
    proxy = bridge.proxy
    proxy.random_delay_s = SLOW_ANSWER_S
    proxy.random_faults(FAULT_RATE, random.Random(SEED))
    endpoint = Endpoint(str(bridge.session._base_url), bridge.keys["supervisor"], "agent-sup")
    timeout_s = RETRY.default.deadline_s + 5
    started = time.monotonic()
    async with aiohttp.ClientSession() as http:
        calls, _ = await asyncio.wait_for(
            asyncio.gather(
                run_agents(
                    http, endpoint, agents=AGENTS, seconds=SECONDS, seed=SEED, timeout_s=timeout_s
                ),
                _cut_repeatedly(pg_proxy, PG_CUTS, SECONDS / (PG_CUTS + 1)),
            ),
            SECONDS + timeout_s + 10,
        )
    proxy.random_faults(0.0)
    elapsed = time.monotonic() - started

    name = urlsplit(database_url).path.lstrip("/")
    report = await check(
        calls,
        database_url_for(pg_server_url, name),
        retry=RETRY,
        slack_s=SLACK_S,
        downstream_tries=proxy.requests + proxy.faults["reset"],
    )
    summary = report.as_dict()
    print("history check:", summary, dict(proxy.faults))
    record_property("history", summary)
    record_property("retry_amplification", summary["retry_amplification"])

    assert not report.violations, report.describe()
    # Each fault was injected; the database cuts failed requests in flight (503, not 500).
    assert min(proxy.faults[f] for f in ("drop", "reset", "delay")) >= 5, proxy.faults
    logs = parsed_logs(log_lines)
    assert _count(logs, service="dispatch-api", error_code="database_unavailable") > 0
    assert _count(logs, service="dispatch-api", status_code=500) == 0
    # Each fault made the bridge retry for its own reason: a lost answer or request
    # (connect), a slow answer (timeout), the database gone (503).
    for reason in ("connect", "timeout", "http_503"):
        assert (
            await _metric(bridge, "bridge", rf'tool_retries_total{{[^}}]*reason="{reason}"[^}}]*}}')
            > 0
        )
    # Answers lost after the commit came back as replays, never as second applications.
    assert await _metric(bridge, "api", "idempotency_replay_total") > 0
    # The history is worth checking: mostly acknowledged, some calls failed and were
    # re-delivered by their agent under the same tool_call_id.
    assert set(report.outcomes) <= EXPECTED_OUTCOMES, report.outcomes
    assert {c.transport for c in calls if c.ok} == {"rest", "mcp"}
    assert report.ok >= 0.5 * report.calls, summary
    assert report.acknowledged >= 200, summary
    assert report.redelivered > 0, summary
    # No more tries reached dispatch-api than the retry budget allows: a try per call, plus
    # retries up to its ratio of the calls, its per-second floor and the bucket it starts with.
    budget = RETRY.budget
    allowed = report.calls * (1 + budget.ratio) + budget.min_retries_per_s * elapsed
    assert report.downstream_tries is not None
    assert report.downstream_tries <= allowed + budget.max_tokens, summary


async def test_the_checker_finds_doubled_lost_phantom_and_late_calls(
    bridge: Bridge, pg_server_url: str, database_url: str
) -> None:
    """The check can fail: effects written twice or out of nowhere, an acknowledgement with
    no effect behind it, and a call past its deadline are each reported."""
    endpoint = Endpoint(str(bridge.session._base_url), bridge.keys["supervisor"], "agent-sup")
    async with aiohttp.ClientSession() as http:
        calls = await asyncio.wait_for(
            run_agents(http, endpoint, agents=2, seconds=1.0, seed=SEED, timeout_s=10), 30
        )
    direct = database_url_for(pg_server_url, urlsplit(database_url).path.lstrip("/"))
    clean = await check(calls, direct, retry=RETRY)
    assert not clean.violations, clean.describe()
    assert clean.acknowledged >= 4

    applied = next(c for c in calls if c.ok and c.tool != "ticket.create")
    ticket = applied.arguments["ticket_id"]
    conn = await asyncpg.connect(direct)
    try:
        for seq, request_id in enumerate((applied.derived_request_id, str(uuid.uuid4()))):
            await conn.execute(
                "INSERT INTO timeline_events (ticket_id, seq, at, type, actor_type, actor_id,"
                " role, request_id) SELECT id, last_seq + 100 + $3, now(), 'held', 'agent',"
                " 'x', 'supervisor', $2 FROM tickets WHERE id = $1",
                uuid.UUID(ticket),
                request_id,
                seq,
            )
    finally:
        await conn.close()
    told_but_never_sent = dataclasses.replace(applied, tool_call_id="never-sent", request_id=None)
    slow = dataclasses.replace(
        applied, tool_call_id="slow", request_id=None, outcome=NO_ANSWER, end=applied.start + 10
    )

    report = await check([*calls, told_but_never_sent, slow], direct, retry=RETRY)

    assert Counter(v.kind for v in report.violations) == {
        "doubled": 1,
        "phantom": 1,
        "lost": 1,
        "late": 1,
    }, report.describe()
    assert (report.doubled, report.lost, report.late) == (1, 1, 1)


#: Tries shorter than a slow spell's answers, a breaker that opens after three failures in a
#: row, and a small retry budget: calls end on timeouts, on the open breaker (first try or a
#: retry) and on a spent budget, so answers claim both `none` and `unknown`.
TIGHT = RetryConfig(
    default=RetryPolicy(
        max_attempts=3,
        per_try_timeout_s=0.3,
        deadline_s=2.0,
        base_backoff_s=0.02,
        max_backoff_s=0.1,
    ),
    budget=BudgetConfig(ratio=0.1, min_retries_per_s=1.0, max_tokens=3.0),
    breaker=BreakerConfig(failure_threshold=3, open_s=1.0),
)
SPELL_S = 1.0


async def _spells(proxy: FaultProxy, times: int, every_s: float) -> None:
    """For SPELL_S, `times` times, the breaker is made to open: every answer slower than a
    try (tries that went out: `unknown`), or, every other time, connections refused (tries
    that provably never left: `none`, and then the open breaker's refusals)."""
    for spell in range(times):
        await asyncio.sleep(every_s)
        if spell % 2:
            proxy.refuse()
            await asyncio.sleep(SPELL_S)
            await proxy.listen_again()
        else:
            proxy.delay_s = 0.5
            await asyncio.sleep(SPELL_S)
            proxy.delay_s = 0.0


@pytest.mark.parametrize("bridge_retry", [TIGHT])
async def test_no_answer_claims_none_for_an_applied_call_through_timeouts_breaker_and_budget(
    bridge: Bridge,
    pg_server_url: str,
    database_url: str,
    record_property: Callable[[str, object], None],
) -> None:
    """Each error answer says `none` or `unknown`; the agents believe it (a new tool_call_id
    after `none`), and the database shows no `none` was false. Then the same history, with
    one applied call doctored into a `none` answer, is caught by the checker."""
    proxy = bridge.proxy
    proxy.random_delay_s = 0.5
    proxy.random_faults(0.1, random.Random(SEED))
    endpoint = Endpoint(str(bridge.session._base_url), bridge.keys["supervisor"], "agent-sup")
    seconds, spells = 10.0, 4
    timeout_s = TIGHT.default.deadline_s + 5
    async with aiohttp.ClientSession() as http:
        calls, _ = await asyncio.wait_for(
            asyncio.gather(
                run_agents(
                    http, endpoint, agents=8, seconds=seconds, seed=SEED, timeout_s=timeout_s
                ),
                _spells(proxy, spells, seconds / (spells + 1)),
            ),
            seconds + timeout_s + 10,
        )
    proxy.random_faults(0.0)
    direct = database_url_for(pg_server_url, urlsplit(database_url).path.lstrip("/"))

    report = await check(calls, direct, retry=TIGHT, slack_s=SLACK_S)
    summary = report.as_dict()
    print("outcome check:", summary, dict(proxy.faults))
    record_property("outcome_history", summary)

    assert not report.violations, report.describe()
    assert set(report.outcomes) <= EXPECTED_OUTCOMES, report.outcomes
    # Every error answer made a claim, and both claims were made and put to the test.
    errors = [c for c in calls if c.error is not None]
    assert all(c.claimed in ("none", "unknown") for c in errors)
    assert report.claimed["none"] > 0, summary
    assert report.claimed["unknown"] > 0, summary
    # Mutations were answered `none` (their agent then moved to a new id, and the checker
    # held the operations answered `none` every time, `refused`, to having no effect).
    assert any(c.mutating and c.claimed == "none" for c in errors), summary
    paused = [c for c in errors if "calls to it are paused" in c.error["message"]]  # type: ignore[index]
    # The breaker refused calls. Which of them had an earlier try that may have taken effect
    # (`unknown`) depends on timing; that case is pinned down on its own in
    # tests/bridge/test_honest_answers.py, and the checker above held every `none` to the truth.
    assert paused, summary
    assert await _metric(bridge, "bridge", r"retry_budget_exhausted_total\{[^}]*\}") > 0
    assert report.acknowledged >= 20, summary

    applied = next(c for c in calls if c.ok and c.tool != "ticket.create")
    lie = dataclasses.replace(
        applied,
        outcome="upstream_unavailable",
        claimed="none",
        result=None,
        error={"code": "upstream_unavailable", "details": {"outcome": "none"}},
    )
    doctored = [lie if c is applied else c for c in calls]
    doctored = [
        c
        for c in doctored
        if c is lie or c.derived_request_id != applied.derived_request_id or not c.mutating
    ]

    caught = await check(doctored, direct, retry=TIGHT, slack_s=SLACK_S)

    assert Counter(v.kind for v in caught.violations) == {"false_none": 1}, caught.describe()
    assert caught.false_none == 1
