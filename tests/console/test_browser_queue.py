"""The queue in Chromium: the filter form narrows it by state and priority, breached SLA
cells stand out, it refreshes itself (console.js) and still reads with JavaScript off."""

from __future__ import annotations

from playwright.async_api import Browser, Page

from testkit.api import WINDOW
from testkit.browser import sign_in

from ._pages import queue
from .conftest import Console


async def _tickets(console: Console) -> dict[str, str]:
    """Four tickets, by name: ready P1, ready P2, new (no contact) P1, scheduled P1."""
    api = console.api
    ready_p1 = await api.create_ticket(priority="P1", customer_name="Ready One")
    ready_p2 = await api.create_ticket(priority="P2", customer_name="Ready Two")
    new = await api.request(
        "POST",
        "/v1/tickets",
        json={"customer_name": "No Contact", "priority": "P1", "incident_type": "lockout"},
    )
    scheduled = await api.create_ticket(priority="P1", customer_name="Booked")
    assert (await api.act(scheduled["id"], "schedule", WINDOW)).status == 200
    return {
        "ready_p1": ready_p1["id"],
        "ready_p2": ready_p2["id"],
        "new": new.body["ticket"]["id"],
        "scheduled": scheduled["id"],
    }


async def test_filtering_by_state_and_priority_shows_only_the_matching_tickets(
    console: Console, page: Page
) -> None:
    ids = await _tickets(console)
    await sign_in(page, console.url, console.api.tokens["dispatcher"])
    assert len(await queue(page)) == 4

    await page.get_by_label("State").select_option("READY_TO_SCHEDULE")
    await page.get_by_label("Priority").select_option("P1")
    await page.get_by_role("button", name="Filter").click()
    await page.wait_for_url("**/console/queue?*")

    (row,) = await queue(page)
    assert row["Customer"] == "Ready One"
    assert (row["State"], row["Priority"]) == ("READY_TO_SCHEDULE", "P1")
    assert ids["ready_p1"].startswith(row["Ticket"])
    # The form shows what it filters by, so the page can be bookmarked and read back.
    assert "state=READY_TO_SCHEDULE" in page.url
    assert "priority=P1" in page.url
    assert await page.get_by_label("State").input_value() == "READY_TO_SCHEDULE"


async def test_a_new_ticket_lists_its_missing_fields_and_a_breached_response_is_marked(
    console: Console, page: Page
) -> None:
    await _tickets(console)
    console.api.clock.advance(hours=3)  # past every P1's 2-hour response target
    await sign_in(page, console.url, console.api.tokens["dispatcher"])

    rows = {r["Customer"]: r for r in await queue(page)}
    assert "contact" in rows["No Contact"]["Missing fields"]
    assert "site_address" in rows["No Contact"]["Missing fields"]
    assert rows["Ready Two"]["Missing fields"] in ("", "—")
    breached = page.locator("#queue-rows tr", has_text="Ready One").locator("td.breached")
    assert await breached.count() >= 1
    calm = page.locator("#queue-rows tr", has_text="Ready Two").locator("td.breached")
    assert await calm.count() == 0


async def test_the_queue_refreshes_itself_without_a_reload(console: Console, page: Page) -> None:
    await page.clock.install()  # the page's timers run on a clock the test moves
    await sign_in(page, console.url, console.api.tokens["dispatcher"])
    assert await queue(page) == []
    await console.api.create_ticket(customer_name="Arrived Meanwhile")
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))

    await page.clock.run_for(16_000)  # console.js fetches the rows every 15 s
    await page.locator("#queue-rows", has_text="Arrived Meanwhile").wait_for()

    assert [r["Customer"] for r in await queue(page)] == ["Arrived Meanwhile"]
    assert navigations == []


async def test_the_queue_reads_with_javascript_disabled_and_offers_a_refresh_link(
    console: Console, browser: Browser
) -> None:
    await console.api.create_ticket(customer_name="Plain Reader")
    context = await browser.new_context(java_script_enabled=False)
    context.set_default_timeout(10_000)
    try:
        page = await context.new_page()
        await sign_in(page, console.url, console.api.tokens["dispatcher"])
        assert [r["Customer"] for r in await queue(page)] == ["Plain Reader"]

        await console.api.create_ticket(customer_name="Second Reader")
        await page.get_by_role("link", name="Refresh").click()
        await page.wait_for_load_state()

        assert {r["Customer"] for r in await queue(page)} == {"Plain Reader", "Second Reader"}
        first = (await queue(page))[0]
        await page.get_by_role("link", name=first["Ticket"]).click()
        await page.wait_for_load_state()
        assert await page.get_by_role("heading", name="Timeline").is_visible()
        assert first["Customer"] in await page.get_by_role("heading", level=1).inner_text()
    finally:
        await context.close()
