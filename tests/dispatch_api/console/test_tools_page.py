"""The tool health page: fleet-wide from a real Prometheus when DISPATCH_PROMETHEUS_URL is
set, else the configured bridge's /metrics, and it says which; a source down is said."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from dispatch_api.settings import ApiSettings
from dispatch_api.web import create_app
from telemetry import JsonLog
from testkit.api import COMPLETE_TICKET, Api
from testkit.console import Page, signed_in
from tests.bridge.conftest import Bridge, bridge, bridge_overrides, bridge_retry
from tests.deploy.test_prometheus_e2e import Prometheus, prometheus, prometheus_extra_bridges

# The bridge harness and the real-Prometheus fixture, re-exported for pytest.
__all__ = [
    "bridge",
    "bridge_overrides",
    "bridge_retry",
    "prometheus",
    "prometheus_extra_bridges",
]


@asynccontextmanager
async def replica(api: Api, settings: ApiSettings, **overrides: Any) -> AsyncIterator[Api]:
    """Another dispatch-api on the same database, configured with `overrides` (the harness's
    was started before the bridge it should know about)."""
    app = create_app(
        replace(settings, **overrides), api.database_url, clock=api.clock, log=JsonLog("x")
    )
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        url = str(server.make_url(""))
        async with aiohttp.ClientSession(base_url=url) as session:
            yield Api(session, api.database_url, api.clock, api.tokens, app, url)
    finally:
        await server.close()


def rows(page: Page) -> dict[str, list[str]]:
    """Tool -> its cells, as a person reads the table."""
    body = page.text.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    found = {}
    for row in re.findall(r"<tr>(.*?)</tr>", body, re.S):
        cells = [
            html.unescape(re.sub(r"<[^>]+>", "", c)).strip()
            for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        ]
        found[cells[0]] = cells[1:]
    return found


def source(page: Page) -> str:
    found = re.search(r'<p class="source">(.*?)</p>', page.text, re.S)
    assert found, "the page does not name its source"
    return html.unescape(found.group(1))


async def _calls(bridge: Bridge) -> None:
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    tid = created.body["result"]["ticket"]["id"]
    await bridge.invoke("tech.arrive", {"ticket_id": tid})  # invalid_transition
    await bridge.invoke("tech.arrive", {"ticket_id": tid})
    held = await bridge.invoke(
        "ticket.cancel", {"ticket_id": tid, "reason": "dup"}, as_="dispatcher"
    )
    assert held.status == 202, held.body


async def test_the_tools_page_reads_a_real_prometheus_fleet_wide_and_says_so(
    prometheus: Prometheus, bridge: Bridge, api_settings: ApiSettings
) -> None:
    await _calls(bridge)
    await prometheus.until_equal("sum(tool_invocations_total)", 4)

    async with (
        replica(bridge.api, api_settings, prometheus_url=prometheus.url) as api,
        signed_in(api, "dispatcher") as person,
    ):
        page = await person.get("/console/tools")

    assert page.status == 200
    assert source(page) == (
        f"Source: fleet-wide from Prometheus at {prometheus.url}. Counts since each replica"
        " started."
    )
    assert "Circuit breaker to dispatch-api: <strong>closed on 1 replica</strong>" in page.text
    table = rows(page)
    # calls, failure ratio, by code, p50, p99, retries, in flight
    assert table["tech.arrive"][:3] == ["2", "100.0%", "invalid_transition=2"]
    assert table["tech.arrive"][5:] == ["0", "0"]
    assert table["ticket.cancel"][:3] == ["1", "0.0%", "—"]  # held for a person: no failure
    assert float(table["ticket.create"][3]) > 0


async def test_without_prometheus_the_tools_page_reads_the_configured_bridge_as_one_replica(
    bridge: Bridge, api_settings: ApiSettings
) -> None:
    await _calls(bridge)
    bridge_url = str(bridge.session._base_url).rstrip("/")

    async with (
        replica(bridge.api, api_settings, bridge_url=bridge_url) as api,
        signed_in(api, "supervisor") as person,
    ):
        page = await person.get("/console/tools")

    assert page.status == 200
    assert source(page) == (
        f"Source: one replica: {bridge_url}/metrics (set DISPATCH_PROMETHEUS_URL for the whole"
        " fleet). Counts since each replica started."
    )
    assert "Circuit breaker to dispatch-api: <strong>closed</strong>" in page.text
    assert rows(page)["tech.arrive"][:3] == ["2", "100.0%", "invalid_transition=2"]


async def test_a_tools_page_whose_source_is_down_or_unset_says_so_with_503(
    api: Api, api_settings: ApiSettings
) -> None:
    async with (
        replica(api, api_settings, prometheus_url="http://127.0.0.1:9") as down,
        signed_in(down, "dispatcher") as person,
    ):
        unreachable = await person.get("/console/tools")
    async with signed_in(api, "dispatcher") as person:
        unset = await person.get("/console/tools")

    assert unreachable.status == 503
    assert (
        "The tool figures cannot be read now: cannot read Prometheus at http://127.0.0.1:9 ("
        in (html.unescape(unreachable.text))
    )
    assert unset.status == 503
    assert (
        "cannot be read now: no source: set DISPATCH_PROMETHEUS_URL or DISPATCH_BRIDGE_URL."
        in unset.text
    )
