"""Two bridge replicas behind one dispatch-api, both scraped by a real Prometheus: the
console's tool page and `dispatch-bridge tools` show the fleet's sums, where each bridge's own
/metrics shows only its share (what an operator behind a load balancer used to get)."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from bridge import create_bridge_app
from bridge._keys import SETTINGS
from dispatch_api.settings import ApiSettings
from dispatch_bridge._ops import tools
from telemetry import JsonLog
from testkit.api import COMPLETE_TICKET
from testkit.console import signed_in
from tests.deploy.test_prometheus_e2e import Prometheus, _target, prometheus
from tests.dispatch_api.console.test_tools_page import replica

from .conftest import Bridge, operator_endpoints

__all__ = ["prometheus"]  # the real-Prometheus fixture of tests/deploy, for pytest


@pytest.fixture
async def second_bridge(bridge: Bridge) -> AsyncIterator[Bridge]:
    """Another replica of the harness's bridge: the same settings, its own process state."""
    app = create_bridge_app(bridge.app[SETTINGS], log=JsonLog("bridge", sink=lambda _: None))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession(base_url=str(server.make_url(""))) as session:
            yield Bridge(session, bridge.api, bridge.proxy, app, bridge.keys)
    finally:
        await server.close()


@pytest.fixture
def prometheus_extra_bridges(second_bridge: Bridge) -> list[str]:
    return [_target(second_bridge.session)]


async def test_the_tool_page_and_tools_sum_every_replica_where_one_bridge_shows_its_share(
    prometheus: Prometheus, bridge: Bridge, second_bridge: Bridge, api_settings: ApiSettings
) -> None:
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    tid = created.body["result"]["ticket"]["id"]
    for via, times in ((bridge, 1), (second_bridge, 2)):
        for _ in range(times):
            await via.invoke("tech.arrive", {"ticket_id": tid})  # invalid_transition
    await prometheus.until_equal('sum(tool_invocations_total{tool="tech.arrive"})', 3)
    ends = operator_endpoints(bridge)

    fleet = orjson.loads(await tools(replace(ends, prometheus_url=prometheus.url), as_json=True))
    one = orjson.loads(await tools(ends, as_json=True))
    async with (
        replica(bridge.api, api_settings, prometheus_url=prometheus.url) as api,
        signed_in(api, "dispatcher") as person,
    ):
        page = await person.get("/console/tools")

    arrive = {t["tool"]: t for t in fleet["tools"]}["tech.arrive"]
    assert (arrive["calls"], arrive["failures_by_code"]) == (3, {"invalid_transition": 3})
    assert fleet["breaker"]["closed"] == 2
    assert {t["tool"]: t for t in one["tools"]}["tech.arrive"]["calls"] == 1  # its share only
    text = html.unescape(re.sub(r"<[^>]+>", "", page.text))
    assert f"Source: fleet-wide from Prometheus at {prometheus.url}." in text
    assert "Circuit breaker to dispatch-api: closed on 2 replicas" in text
    row = re.search(r"<td><code>tech\.arrive</code></td>\s*<td>(\d+)</td>", page.text)
    assert row is not None
    assert row.group(1) == "3"
