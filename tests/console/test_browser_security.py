"""Hostile data and restricted people in Chromium: a script in a customer name is text that
never runs, a technician sees only the tickets assigned to them, a form with a tampered
CSRF token is refused and changes nothing."""

from __future__ import annotations

from playwright.async_api import BrowserContext, Page

from testkit.api import WINDOW, window
from testkit.browser import Watch, sign_in

from ._pages import queue
from .conftest import Console

HOSTILE = "<script>alert('xss')</script><img src=x onerror=\"alert('img')\">"


async def test_a_script_in_a_customer_name_renders_as_text_and_never_runs(
    console: Console, page: Page, watch: Watch
) -> None:
    tid = (await console.api.create_ticket(customer_name=HOSTILE))["id"]
    await sign_in(page, console.url, console.api.tokens["dispatcher"])

    (row,) = await queue(page)
    assert row["Customer"] == HOSTILE
    await page.goto(console.at(f"tickets/{tid}"))
    assert HOSTILE in await page.get_by_role("heading", level=1).inner_text()

    # Nothing ran and nothing tried to: no dialog, no console output (a Content-Security-
    # Policy refusal would print one), no page error, no element the name smuggled in.
    assert watch.dialogs == []
    assert watch.console == []
    assert watch.errors == []
    assert await page.locator("main script, main img[src='x']").count() == 0


async def test_a_technician_sees_only_their_assigned_tickets_and_others_are_404(
    console: Console, page: Page
) -> None:
    api = console.api
    mine = (await api.create_ticket(customer_name="Assigned To Me"))["id"]
    theirs = (await api.create_ticket(customer_name="Someone Else's"))["id"]
    await api.create_ticket(customer_name="Nobody's Yet")
    assert (await api.act(mine, "schedule", WINDOW)).status == 200
    assert (await api.act(theirs, "schedule", window(0, "tech-2"))).status == 200

    await sign_in(page, console.url, api.tokens["technician"])

    assert [r["Customer"] for r in await queue(page)] == ["Assigned To Me"]
    answer = await page.goto(console.at(f"tickets/{theirs}"))
    assert answer is not None
    assert answer.status == 404
    assert "Someone Else" not in await page.content()
    answer = await page.goto(console.at(f"tickets/{mine}"))
    assert answer is not None
    assert answer.status == 200


async def test_a_sign_out_with_a_tampered_csrf_token_is_refused_and_the_session_lives_on(
    console: Console, context: BrowserContext, page: Page
) -> None:
    await sign_in(page, console.url, console.api.tokens["supervisor"])
    await page.locator("form.sign-out input[name=csrf_token]").evaluate(
        "input => { input.value = 'forged' + input.value.slice(6) }"
    )

    async with page.expect_response(console.at("sign-out")) as answer:
        await page.get_by_role("button", name="Sign out").click()

    assert (await answer.value).status == 403
    assert await console.api.count("SELECT count(*) FROM console_sessions") == 1
    await page.goto(console.at("queue"))
    assert page.url == console.at("queue")
