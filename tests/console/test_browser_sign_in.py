"""Signing in and out of the console in Chromium: a token typed into a form becomes a session
cookie the page's scripts cannot read, the token goes nowhere else, the keyboard is enough,
and signing out really ends the session."""

from __future__ import annotations

from playwright.async_api import BrowserContext, Page, Request

from testkit.browser import sign_in

from .conftest import Console


async def test_a_token_typed_into_the_sign_in_form_opens_the_queue_with_an_httponly_strict_cookie(
    console: Console, context: BrowserContext, page: Page
) -> None:
    token = console.api.tokens["supervisor"]
    requested: list[Request] = []
    page.on("request", lambda r: requested.append(r))

    await sign_in(page, console.url, token)

    assert page.url == console.at("queue")
    assert await page.get_by_role("heading", level=1).inner_text() == "Queue"
    assert "sup-1" in await page.get_by_role("navigation").inner_text()
    (cookie,) = [c for c in await context.cookies() if c["name"] == "dispatch_console"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/console"
    assert cookie["value"] != token
    # Scripts on the page never see the session, and the token is in no URL or page.
    assert "dispatch_console" not in await page.evaluate("document.cookie")
    assert all(token not in r.url for r in requested)
    assert token not in await page.content()


async def test_a_wrong_token_answers_401_with_the_form_and_a_message_and_no_session(
    console: Console, context: BrowserContext, page: Page
) -> None:
    await page.goto(console.at("sign-in"))
    await page.get_by_label("dispatch-api token").fill("not-a-token-0123456789")
    async with page.expect_response(console.at("sign-in")) as answer:
        await page.get_by_role("button", name="Sign in").click()

    assert (await answer.value).status == 401
    assert await page.get_by_role("alert").is_visible()
    assert await page.get_by_label("dispatch-api token").input_value() == ""
    assert "dispatch_console" not in {c["name"] for c in await context.cookies()}


async def test_the_gateway_token_cannot_sign_in_because_the_console_is_for_people(
    console: Console, context: BrowserContext, page: Page
) -> None:
    await sign_in(page, console.url, console.api.tokens["gateway"])

    assert page.url == console.at("sign-in")
    assert await page.get_by_role("alert").is_visible()
    assert "dispatch_console" not in {c["name"] for c in await context.cookies()}


async def test_tab_reaches_the_token_field_and_enter_signs_in(console: Console, page: Page) -> None:
    await page.goto(console.at("sign-in"))

    for _ in range(5):  # a keyboard user gets there in a few presses
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.id") == "token":
            break
    assert await page.evaluate("document.activeElement.id") == "token"
    await page.keyboard.type(console.api.tokens["dispatcher"])
    await page.keyboard.press("Enter")
    await page.wait_for_url(console.at("queue"))

    assert await page.get_by_role("heading", level=1).inner_text() == "Queue"


async def test_signing_out_ends_the_session_even_for_a_copy_of_its_cookie(
    console: Console, context: BrowserContext, page: Page
) -> None:
    await sign_in(page, console.url, console.api.tokens["supervisor"])
    kept = await context.cookies()

    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_load_state()
    # As if someone had copied the cookie before: the browser sends it again.
    await context.add_cookies(
        [{"name": c["name"], "value": c["value"], "url": console.url} for c in kept]
    )
    await page.goto(console.at("queue"))

    assert page.url.startswith(console.at("sign-in"))
    assert await page.get_by_label("dispatch-api token").is_visible()
    assert await console.api.count("SELECT count(*) FROM console_sessions") == 0
