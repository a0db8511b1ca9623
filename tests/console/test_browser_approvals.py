"""Approvals in Chromium: a person approves an agent's held ticket.cancel and the agent's
re-sent call completes as a replay; a form posted from another site, or with a tampered
CSRF token, is refused and the approval still waits. And the tool page shows the bridge's
figures for the calls just made."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Page

from testkit.approvals import statuses
from testkit.browser import sign_in

from ._pages import table
from .conftest import AGENT_ID, Console

CALL_ID = "cancel-from-the-console"


async def _held_cancel(console: Console) -> tuple[str, str]:
    """A ticket and the approval holding the agent's call to cancel it."""
    tid = (await console.api.create_ticket(customer_name="Margaret Hamilton"))["id"]
    status, envelope = await console.invoke(
        "ticket.cancel", {"ticket_id": tid, "reason": "customer fixed it"}, CALL_ID
    )
    assert status == 202, envelope
    assert envelope["error"]["code"] == "approval_pending"
    return tid, str(envelope["error"]["details"]["approval_id"])


async def test_approving_a_held_cancel_lets_the_agents_re_sent_call_complete_as_a_replay(
    console: Console, page: Page
) -> None:
    tid, approval_id = await _held_cancel(console)
    await sign_in(page, console.url, console.api.tokens["supervisor"])
    await page.get_by_role("link", name="Approvals").click()
    await page.wait_for_url(console.at("approvals"))

    card = page.locator(f"article[aria-labelledby='approval-{approval_id}']")
    shown = await card.inner_text()
    assert "ticket.cancel" in shown
    assert f"agent {AGENT_ID}" in shown
    assert '"reason": "customer fixed it"' in shown  # exactly what would run
    await card.get_by_label("Reason").first.fill("confirmed by phone")
    await card.get_by_role("button", name="Approve").click()
    await page.wait_for_load_state()

    flash = await page.get_by_role("status").inner_text()
    assert flash.startswith("Approved: ticket.cancel")
    assert "ran" in flash
    (decided,) = await table(page, page.locator("section", has_text="Decided").locator("table"))
    assert decided["Status"].startswith("executed")
    assert decided["Decided by"] == "sup-1 (supervisor)"
    status, envelope = await console.invoke(
        "ticket.cancel", {"ticket_id": tid, "reason": "customer fixed it"}, CALL_ID
    )
    assert status == 200, envelope
    assert envelope["ok"] is True
    assert envelope["replayed"] is True
    assert envelope["result"]["ticket"]["state"] == "CANCELLED"
    await page.get_by_role("link", name=tid[:8]).click()
    await page.wait_for_url(console.at(f"tickets/{tid}"))
    assert "CANCELLED" in await page.locator("dl").first.inner_text()


@dataclass
class OtherSite:
    url: str
    pages: dict[str, str]


@pytest.fixture
async def other_site() -> AsyncIterator[OtherSite]:
    """A server a person might also have open: `localhost` is another site than the
    console's 127.0.0.1, so the browser treats its pages as cross-site."""
    pages: dict[str, str] = {}

    async def serve(request: web.Request) -> web.Response:
        if request.path not in pages:
            raise web.HTTPNotFound()
        return web.Response(text=pages[request.path], content_type="text/html")

    app = web.Application()
    app.router.add_get("/{name}", serve)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield OtherSite(f"http://localhost:{server.port}", pages)
    finally:
        await server.close()


async def test_an_approve_form_posted_from_another_site_is_refused_and_the_call_still_waits(
    console: Console, page: Page, other_site: OtherSite
) -> None:
    tid, approval_id = await _held_cancel(console)
    await sign_in(page, console.url, console.api.tokens["supervisor"])
    target = console.at(f"approvals/{approval_id}/approve")
    other_site.pages["/prize"] = (
        f'<form method="post" action="{target}">'
        '<input type="hidden" name="csrf_token" value="guessed">'
        '<input type="hidden" name="reason" value="looks fine">'
        '<button type="submit">Claim your prize</button></form>'
    )

    await page.goto(f"{other_site.url}/prize")
    async with page.expect_response(target) as answer:
        await page.get_by_role("button", name="Claim your prize").click()

    assert (await answer.value).status == 403
    assert await statuses(console.api) == ["pending"]
    ticket = await console.api.request("GET", f"/v1/tickets/{tid}")
    assert ticket.body["state"] == "READY_TO_SCHEDULE"


async def test_an_approve_form_with_a_tampered_csrf_token_is_refused_and_the_call_still_waits(
    console: Console, page: Page
) -> None:
    _, approval_id = await _held_cancel(console)
    await sign_in(page, console.url, console.api.tokens["supervisor"])
    await page.goto(console.at("approvals"))
    card = page.locator(f"article[aria-labelledby='approval-{approval_id}']")
    approve = card.locator("form", has=page.get_by_role("button", name="Approve"))
    await approve.locator("input[name=csrf_token]").evaluate(
        "input => { input.value = input.value.split('').reverse().join('') }"
    )
    await approve.get_by_label("Reason").fill("looks fine")

    async with page.expect_response(console.at(f"approvals/{approval_id}/approve")) as answer:
        await approve.get_by_role("button", name="Approve").click()

    assert (await answer.value).status == 403
    assert await statuses(console.api) == ["pending"]


async def test_the_tool_page_shows_the_bridges_figures_and_says_it_is_one_replica(
    console: Console, page: Page
) -> None:
    await _held_cancel(console)
    tid = (await console.api.create_ticket())["id"]
    status, _ = await console.invoke("ticket.get", {"ticket_id": tid})
    assert status == 200
    await sign_in(page, console.url, console.api.tokens["dispatcher"])

    await page.get_by_role("link", name="Tools").click()
    await page.wait_for_url(console.at("tools"))

    assert console.bridge_url in await page.locator("p.source").inner_text()
    assert "replica" in await page.locator("p.source").inner_text()
    rows = {r["Tool"]: r for r in await table(page)}
    assert rows["ticket.get"]["Calls"] == "1"
    assert rows["ticket.get"]["Failure ratio"] == "0.0%"
