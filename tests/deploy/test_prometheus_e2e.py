"""The project's rules in a real Prometheus, scraping the real services.

A `prometheus` server (the Debian package's /usr/bin/prometheus) runs on loopback in a
temporary directory, scraping the bridge's and dispatch-api's test servers every second and
evaluating deploy/prometheus/rules/dispatch-bridge.rules.yml, unchanged, every second. The
test stages an SLA breach and a burst of idempotency conflicts through the bridge and waits
for DispatchSlaBreach and DispatchIdempotencyConflictsSpiking to fire. Both alerts have no
`for:` and read `increase`/`rate` of counters that exist at zero from the start, so they fire
within seconds of the first scrape that sees the new counts: no rewritten copy of the rules is
needed. The waits are bounded waits for a real process, not timed assertions.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from testkit.api import COMPLETE_TICKET, FakeClock
from tests.bridge.conftest import Bridge
from tests.deploy.test_rules import RULES, bridge, bridge_overrides, bridge_retry

PROMETHEUS = "prometheus"
STARTUP_S = 20.0
FIRING_S = 60.0
POLL_S = 0.5
CONFLICTS = 40  # over 5 minutes, > 0.05/s needs more than 15

# The bridge harness, re-exported for pytest.
__all__ = ["bridge", "bridge_overrides", "bridge_retry"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _target(session: aiohttp.ClientSession) -> str:
    base = session._base_url
    assert base is not None
    return f"{base.host}:{base.port}"


async def _until(
    what: str, check: Callable[[], Awaitable[bool]], timeout_s: float, log: Path
) -> None:
    """Poll `check` until it holds, for at most `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            tail = (await asyncio.to_thread(log.read_text))[-4000:]
            pytest.fail(f"{what}: not within {timeout_s}s\n{tail}")
        await asyncio.sleep(POLL_S)


class Prometheus:
    def __init__(self, url: str, session: aiohttp.ClientSession, log: Path) -> None:
        self.url = url
        self.session = session
        self.log = log

    async def get(self, path: str, **params: str) -> Any:
        try:
            async with self.session.get(self.url + path, params=params) as resp:
                if resp.status != 200:
                    return None
                return await resp.json()
        except aiohttp.ClientConnectionError:
            return None

    async def targets_up(self) -> int:
        body = await self.get("/api/v1/query", query="sum(up)")
        result = body["data"]["result"] if body else []
        return int(float(result[0]["value"][1])) if result else 0

    async def until_equal(self, promql: str, want: float, timeout_s: float = FIRING_S) -> None:
        """Bounded wait until the instant query's single value is `want` (scraped)."""

        async def seen() -> bool:
            body = await self.get("/api/v1/query", query=promql)
            result = body["data"]["result"] if body else []
            return bool(result) and float(result[0]["value"][1]) == want

        await _until(f"{promql} == {want}", seen, timeout_s, self.log)

    async def firing(self) -> set[str]:
        body = await self.get("/api/v1/alerts")
        alerts = body["data"]["alerts"] if body else []
        return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}


@pytest.fixture
def prometheus_extra_bridges() -> list[str]:
    """More bridge replicas (host:port) scraped under job `bridge`; a fleet test adds its own."""
    return []


@pytest.fixture
async def prometheus(
    bridge: Bridge, tmp_path: Path, prometheus_extra_bridges: list[str]
) -> AsyncIterator[Prometheus]:
    port = _free_port()
    bridges = [_target(bridge.session), *prometheus_extra_bridges]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "bridge", "static_configs": [{"targets": bridges}]},
            {
                "job_name": "dispatch-api",
                "static_configs": [{"targets": [_target(bridge.api.session)]}],
            },
        ],
    }
    (tmp_path / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        async with aiohttp.ClientSession() as session:
            server = Prometheus(f"http://127.0.0.1:{port}", session, log)

            async def ready() -> bool:
                if process.returncode is not None:
                    output = await asyncio.to_thread(log.read_text)
                    pytest.fail(f"prometheus exited with {process.returncode}:\n{output}")
                return await server.targets_up() == 1 + len(bridges)

            await _until("both targets scraped", ready, STARTUP_S, log)
            yield server
    finally:
        if process.returncode is None:
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


async def test_a_real_prometheus_fires_the_sla_breach_and_idempotency_conflict_alerts(
    prometheus: Prometheus, bridge: Bridge, clock: FakeClock
) -> None:
    created = await bridge.invoke("ticket.create", {**COMPLETE_TICKET, "priority": "P1"})
    tid = created.body["result"]["ticket"]["id"]
    clock.advance(hours=3)  # past the P1 response target (2 h)
    breaches = await bridge.api.app_service.sweep_sla()
    codes = []
    for i in range(CONFLICTS + 1):  # one tool_call_id, different arguments each time
        reply = await bridge.invoke(
            "customer.follow_up",
            {"ticket_id": tid, "channel": "phone", "outcome": "no_answer", "reason": f"try {i}"},
            tool_call_id="call_1",
        )
        codes.append("ok" if reply.body["ok"] else reply.body["error"]["code"])

    async def both_firing() -> bool:
        return {"DispatchSlaBreach", "DispatchIdempotencyConflictsSpiking"} <= (
            await prometheus.firing()
        )

    assert breaches >= 1
    assert codes == ["ok"] + ["idempotency_conflict"] * CONFLICTS
    await _until("both alerts firing", both_firing, FIRING_S, prometheus.log)
    alerts = (await prometheus.get("/api/v1/alerts"))["data"]["alerts"]
    [breach] = [a for a in alerts if a["labels"]["alertname"] == "DispatchSlaBreach"]
    assert breach["labels"]["priority"] == "P1"
    assert breach["annotations"]["runbook_url"].endswith("docs/runbooks/RB4-sla-breach.md")
