"""Screenshots of the operator console for the README: docs/console/*.png.

Starts the product as in production (`serve-api`, `serve-bridge`, embedded PostgreSQL; see
bench/_product.py), seeds a realistic morning (tickets in every state, an agent's calls
through the bridge, a rejected completion with a photo, calls held for approval), then
takes each page in Debian's Chromium (testkit/browser.py): sign-in, queue, ticket,
approvals, tools.

    python -m bench.console_screenshots [--out docs/console]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from playwright.async_api import Page, async_playwright

from testkit.browser import launch, png, sign_in

from ._product import Product

#: P1 must reach the site within 18 s here (0.005 h), so a breach shows within the run.
SLA_TARGETS = "P1=0.005/8,P2=4/24,P3=24/72,P4=72/168"
OUT = Path(__file__).resolve().parent.parent / "docs" / "console"
#: (customer, priority, incident, site, phone): what a dispatcher's morning looks like.
CUSTOMERS = (
    ("Harbour View Dental", "P1", "water_leak", "4 Quay Street, Bristol", "+44 117 496 0101"),
    ("Mrs. Okonkwo", "P2", "no_heat", "17 Elm Grove, Leeds", "+44 113 496 0442"),
    ("Riverside Primary School", "P1", "electrical_hazard", "Mill Lane, York", "+44 1904 496 031"),
    ("Café Lumière", "P3", "lockout", "22 Rue Street, Brighton", "+44 1273 496 877"),
    ("Patel & Sons Grocers", "P2", "water_leak", "81 High Road, Leicester", "+44 116 496 0250"),
    ("J. Whitfield", "P4", "general", "Flat 3, 9 Park Row, Bath", "+44 1225 496 613"),
    ("Northgate Library", "P3", "no_heat", "1 Northgate, Chester", "+44 1244 496 090"),
    ("Studio Fenwick", "P2", "general", "5 Canal Wharf, Manchester", "+44 161 496 0784"),
)


class Seeder:
    """Requests as a person (the supervisor token) and as an agent (through the bridge)."""

    def __init__(self, http: aiohttp.ClientSession, product: Product) -> None:
        self.http = http
        self.urls = product.urls
        self.person = {"Authorization": f"Bearer {product.secrets['api_token']}"}
        self.agent = {"Authorization": f"Bearer {product.secrets['agent_key']}"}

    async def api(self, method: str, path: str, body: Any = None) -> Any:
        headers = {**self.person, "Idempotency-Key": str(uuid.uuid4())}
        async with self.http.request(
            method, self.urls["api"] + path, json=body, headers=headers
        ) as resp:
            answer = await resp.json(content_type=None)
            if resp.status >= 500:
                raise RuntimeError(f"{method} {path}: {resp.status} {answer}")
            return answer

    async def tool(self, name: str, arguments: dict[str, Any], call_id: str | None = None) -> Any:
        body: dict[str, Any] = {"arguments": arguments}
        if call_id:
            body["tool_call_id"] = call_id
        async with self.http.post(
            f"{self.urls['bridge']}/v1/tools/{name}/invoke", json=body, headers=self.agent
        ) as resp:
            return await resp.json(content_type=None)


def _window(day: int, hour: int, technician: str) -> dict[str, str]:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(
        days=day, hours=hour
    )
    return {
        "technician_id": technician,
        "window_start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "window_end": (start + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _photo() -> bytes:
    return png(320, 200, (64, 112, 160))


async def seed(seeder: Seeder) -> dict[str, str]:
    """The morning's tickets; which one's story the ticket page shows."""
    ids = []
    for name, priority, incident, site, phone in CUSTOMERS:
        made = await seeder.api(
            "POST",
            "/v1/tickets",
            {
                "customer_name": name,
                "priority": priority,
                "incident_type": incident,
                "site_address": site,
                "contact_phone": phone,
            },
        )
        ids.append(made["ticket"]["id"])
    # Two calls came in by phone with details still to fill in.
    for body in (
        {"customer_name": "Unit 7, Westway Trading Estate", "priority": "P2"},
        {"customer_name": "A. Lindqvist", "contact_email": "a.lindqvist@example.org"},
    ):
        await seeder.api("POST", "/v1/tickets", body)

    story = ids[0]  # Harbour View Dental: the leak an agent handled
    await seeder.tool("ticket.schedule", {"ticket_id": story, **_window(0, 1, "tech-dev-1")})
    await seeder.api("POST", f"/v1/tickets/{story}/dispatch", {})
    await seeder.api("POST", f"/v1/tickets/{story}/arrive", {})
    await seeder.tool("tech.complete", {"ticket_id": story, "reason": "leak fixed"})
    await seeder.tool(
        "evidence.attach",
        {
            "ticket_id": story,
            "kind": "photo",
            "tag": "before",
            "content_type": "image/png",
            "description": "water under the sink",
            "content_base64": base64.b64encode(_photo()).decode(),
        },
    )
    for i, tid in enumerate((ids[1], ids[4])):
        await seeder.tool(
            "ticket.schedule", {"ticket_id": tid, **_window(1, 2 * i, f"tech-dev-{i + 1}")}
        )
    # Held for a person: two cancellations and an emergency bypass; one already decided.
    await seeder.tool(
        "ticket.cancel", {"ticket_id": ids[5], "reason": "customer found the spare key"}, "c-1"
    )
    await seeder.tool(
        "ticket.cancel", {"ticket_id": ids[3], "reason": "duplicate of an earlier call"}, "c-2"
    )
    await seeder.tool(
        "ticket.dispatch",
        {
            "ticket_id": ids[2],
            "technician_id": "tech-dev-2",
            "bypass_reason": "exposed wiring in a classroom",
        },
        "d-1",
    )
    decided = await seeder.tool(
        "ticket.cancel", {"ticket_id": ids[7], "reason": "customer rescheduled by email"}, "c-3"
    )
    approval = decided["error"]["details"]["approval_id"]
    await seeder.api(
        "POST", f"/v1/approvals/{approval}/approve", {"reason": "confirmed with the customer"}
    )
    await _breach(seeder, ids[2])
    return {"story": story}


async def _breach(seeder: Seeder, ticket_id: str) -> None:
    """Wait (at most a minute) until the SLA sweep has recorded `ticket_id`'s response
    breach: the run's P1 response target is seconds (SLA_TARGETS), so the queue shows one
    in red without faking any time (the timeline is append-only)."""
    for _ in range(600):
        timeline = await seeder.api("GET", f"/v1/tickets/{ticket_id}/timeline")
        if any(e["type"] == "sla_breached" for e in timeline["events"]):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("no SLA breach within a minute")


async def _shot(page: Page, out: Path, name: str) -> None:
    await page.wait_for_load_state("networkidle")
    await page.screenshot(path=str(out / f"{name}.png"), full_page=True)
    print(f"wrote {out / name}.png")


async def run(out: Path) -> None:
    env = {"DISPATCH_SLA_TARGETS": SLA_TARGETS, "DISPATCH_SLA_SWEEP_INTERVAL_S": "1"}
    async with Product(env) as product, aiohttp.ClientSession() as http:
        seeded = await seed(Seeder(http, product))
        console = product.urls["api"] + "/console/"
        async with async_playwright() as playwright:
            browser = await launch(playwright)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 800})
                await page.goto(console + "sign-in")
                await page.get_by_label("dispatch-api token").fill(product.secrets["api_token"])
                await _shot(page, out, "sign-in")
                await sign_in(page, console, product.secrets["api_token"])
                await _shot(page, out, "queue")
                await page.goto(console + f"tickets/{seeded['story']}")
                await _shot(page, out, "ticket")
                await page.goto(console + "approvals")
                await _shot(page, out, "approvals")
                await page.goto(console + "tools")
                await _shot(page, out, "tools")
            finally:
                await browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    out: Path = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    asyncio.run(run(out))


if __name__ == "__main__":
    main()
