"""`dispatch-bridge tools` reads fleet-wide figures from a real Prometheus when
DISPATCH_PROMETHEUS_URL is set, else the bridge's own /metrics, and says which."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from dispatch_bridge._ops import OpsError, tools
from telemetry import ToolHealthError, tool_health
from testkit.api import COMPLETE_TICKET
from tests.deploy.test_prometheus_e2e import Prometheus, prometheus, prometheus_extra_bridges

from .conftest import Bridge, operator_endpoints

# The real-Prometheus fixtures of tests/deploy, re-exported for pytest.
__all__ = ["prometheus", "prometheus_extra_bridges"]

CLI = Path(sys.executable).with_name("dispatch-bridge")


async def _stage_calls(bridge: Bridge) -> asyncio.Task[Any]:
    """ok, invalid_transition, approval_pending, and one ticket.get left hanging in flight
    (the caller releases the proxy and awaits the returned task)."""
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    tid = created.body["result"]["ticket"]["id"]
    await bridge.invoke("tech.arrive", {"ticket_id": tid})  # invalid_transition
    held = await bridge.invoke(
        "ticket.cancel", {"ticket_id": tid, "reason": "dup"}, as_="dispatcher"
    )
    assert held.status == 202, held.body
    bridge.proxy.hold()
    hanging = asyncio.create_task(bridge.invoke("ticket.get", {"ticket_id": tid}))
    await asyncio.wait_for(bridge.proxy.holding.wait(), 5)
    return hanging


async def test_tools_reads_a_real_prometheus_when_it_is_set_and_names_it_as_the_source(
    prometheus: Prometheus, bridge: Bridge
) -> None:
    hanging = await _stage_calls(bridge)
    try:
        await prometheus.until_equal("sum(tool_calls_in_flight)", 1)
        await prometheus.until_equal("sum(tool_invocations_total)", 3)
        ends = replace(operator_endpoints(bridge), prometheus_url=prometheus.url)
        fleet = orjson.loads(await tools(ends, as_json=True))
        text = await tools(ends, as_json=False)
    finally:
        bridge.proxy.release()
        await hanging
    local = orjson.loads(await tools(operator_endpoints(bridge), as_json=True))

    assert fleet["source"] == "prometheus"
    assert fleet["source_line"] == f"fleet-wide from Prometheus at {prometheus.url}"
    assert text.splitlines()[0] == (
        f"source: fleet-wide from Prometheus at {prometheus.url};"
        " circuit breaker: closed on 1 replica"
    )
    by_tool = {t["tool"]: t for t in fleet["tools"]}
    assert by_tool["tech.arrive"]["failure_ratio"] == 1.0
    assert by_tool["tech.arrive"]["failures_by_code"] == {"invalid_transition": 1}
    assert (by_tool["ticket.cancel"]["calls"], by_tool["ticket.cancel"]["failure_ratio"]) == (1, 0)
    assert by_tool["ticket.get"]["in_flight"] == 1
    assert fleet["breaker"] == {"closed": 1, "half_open": 0, "open": 0}
    # One replica scraped: both sources tell the same story (the hanging call has finished
    # since, so it is left out of the comparison).
    done = {t["tool"]: t for t in local["tools"] if t["tool"] != "ticket.get"}
    for name, figures in done.items():
        assert by_tool[name]["calls"] == figures["calls"], name
        assert by_tool[name]["failures_by_code"] == figures["failures_by_code"], name
        assert by_tool[name]["p50_ms"] == pytest.approx(figures["p50_ms"]), name
        assert by_tool[name]["p99_ms"] == pytest.approx(figures["p99_ms"]), name


async def test_tools_without_prometheus_reads_the_bridge_it_knows_and_says_it_is_one_replica(
    bridge: Bridge,
) -> None:
    ends = operator_endpoints(bridge)
    await bridge.invoke("ticket.create", COMPLETE_TICKET)

    text = await tools(ends, as_json=False)
    report = orjson.loads(await tools(ends, as_json=True))

    assert text.splitlines()[0] == (
        f"source: one replica: {ends.bridge_url}/metrics; circuit breaker: closed"
    )
    assert text.splitlines()[1].split() == [
        "tool", "calls", "failed", "by", "code", "p50", "ms", "p99", "ms", "retries", "in", "flight"
    ]  # fmt: skip
    assert (report["source"], report["source_url"]) == ("bridge", f"{ends.bridge_url}/metrics")
    assert [(t["tool"], t["calls"], t["retries"]) for t in report["tools"]] == [
        ("ticket.create", 1, 0)
    ]


async def test_a_prometheus_that_is_down_is_one_line_naming_it_and_exit_1(
    bridge: Bridge, tmp_path: Path
) -> None:
    ends = operator_endpoints(bridge)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")},
        "DISPATCH_DATA_DIR": str(tmp_path),
        "DISPATCH_API_URL": ends.api_url,
        "DISPATCH_API_TOKEN": ends.api_token,
        "DISPATCH_BRIDGE_URL": ends.bridge_url,
        "DISPATCH_AGENT_KEY": ends.agent_key,
        "DISPATCH_PROMETHEUS_URL": "http://127.0.0.1:9/",
    }

    run = await asyncio.to_thread(
        subprocess.run, [str(CLI), "tools"], env=env, capture_output=True, text=True
    )
    with pytest.raises(OpsError, match=r"^tool figures: cannot read Prometheus at http://127"):
        await tools(replace(ends, prometheus_url="http://127.0.0.1:9"), as_json=False)

    assert run.returncode == 1
    assert run.stderr.count("\n") == 1
    assert run.stderr.startswith(
        "dispatch-bridge tools: tool figures: cannot read Prometheus at http://127.0.0.1:9 ("
    )


async def test_a_source_that_accepts_but_never_answers_is_given_up_on_with_a_clear_error() -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        async with aiohttp.ClientSession() as session:
            with pytest.raises(ToolHealthError) as prom:
                await tool_health(session, url, None, timeout_s=0.3)
            with pytest.raises(ToolHealthError) as bridge:
                await tool_health(session, None, url, timeout_s=0.3)
            with pytest.raises(ToolHealthError) as neither:
                await tool_health(session, None, None)

    assert str(prom.value) == f"cannot read Prometheus at {url} (no answer in time)"
    assert str(bridge.value) == f"cannot read the bridge at {url}/metrics (no answer in time)"
    assert str(neither.value) == "no source: set DISPATCH_PROMETHEUS_URL or DISPATCH_BRIDGE_URL"
