"""A ticket's story in Chromium: who changed it through which tool under which request id,
what a rejected completion lacked, and its evidence with metadata, a download and a
thumbnail."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from playwright.async_api import Page

from testkit.api import WINDOW
from testkit.browser import png, sign_in

from ._pages import table
from .conftest import AGENT_ID, Console

PHOTO = png(40, 30, (30, 120, 200))


async def _story(console: Console) -> tuple[str, str]:
    """A ticket an agent scheduled through the bridge, a person took on site, whose
    completion was rejected, with one inline photo: (ticket id, the agent's request id)."""
    api = console.api
    tid = (await api.create_ticket(customer_name="Grace Hopper"))["id"]
    status, envelope = await console.invoke("ticket.schedule", {"ticket_id": tid, **WINDOW})
    assert status == 200, envelope
    for action in ("dispatch", "arrive"):
        assert (await api.act(tid, action)).status == 200
    assert (await api.act(tid, "complete")).status == 422  # nothing attached yet
    photo = {
        "kind": "photo",
        "tag": "before",
        "content_type": "image/png",
        "content_base64": base64.b64encode(PHOTO).decode(),
    }
    assert (await api.act(tid, "evidence", photo)).status == 201
    return tid, str(envelope["request_id"])


async def test_the_timeline_names_the_agent_its_tool_and_request_id_and_what_a_rejection_lacked(
    console: Console, page: Page
) -> None:
    tid, request_id = await _story(console)
    await sign_in(page, console.url, console.api.tokens["supervisor"])

    await page.get_by_role("link", name=tid[:8]).click()
    await page.wait_for_url(console.at(f"tickets/{tid}"))

    assert tid in await page.get_by_role("heading", level=1).inner_text()
    assert "Grace Hopper" in await page.get_by_role("heading", level=1).inner_text()
    timeline = await table(page, page.locator("table", has_text="Request id"))
    (scheduled,) = [e for e in timeline if e["Tool"] == "ticket.schedule"]
    assert scheduled["Actor"] == f"agent {AGENT_ID}"
    assert scheduled["Role"] == "dispatcher"
    assert scheduled["Request id"] == request_id
    assert scheduled["From → to"] == "READY_TO_SCHEDULE → SCHEDULED"
    rejected = await page.locator("section", has_text="Rejected attempts").inner_text()
    assert "completion_rejected" in rejected
    assert "photo tagged after" in rejected
    assert "signature" in rejected


async def test_evidence_shows_its_metadata_downloads_the_exact_bytes_and_shows_a_thumbnail(
    console: Console, page: Page, tmp_path: Path
) -> None:
    tid, _ = await _story(console)
    await sign_in(page, console.url, console.api.tokens["supervisor"])
    await page.goto(console.at(f"tickets/{tid}"))

    (item,) = await table(page, page.locator("table", has_text="sha256"))
    assert (item["Kind"], item["Tag"], item["Content type"]) == ("photo", "before", "image/png")
    assert item["sha256"] == hashlib.sha256(PHOTO).hexdigest()
    assert "sup-1" in item["Captured by"]
    async with page.expect_download() as download:
        await page.get_by_role("link", name="Download").click()
    saved = tmp_path / "photo.png"
    await (await download.value).save_as(saved)
    assert saved.read_bytes() == PHOTO
    thumbnail = page.locator("img.thumbnail")
    # The browser decoded the stored PNG: its real width, not a broken-image placeholder.
    assert await thumbnail.evaluate("img => img.complete && img.naturalWidth") == 40
