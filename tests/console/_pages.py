"""Reading console pages as a person reads them: tables by their column headers."""

from __future__ import annotations

from playwright.async_api import Locator, Page


async def table(page: Page, locator: str | Locator = "table") -> list[dict[str, str]]:
    """The body rows of a table as {column header: cell text}; a row that spans the whole
    table ("No tickets match.") is not a row of data."""
    found = page.locator(locator) if isinstance(locator, str) else locator
    headers = [h.strip() for h in await found.locator("thead th").all_inner_texts()]
    rows = []
    for row in await found.locator("tbody tr").all():
        cells = [c.strip() for c in await row.locator("td").all_inner_texts()]
        if len(cells) == len(headers):
            rows.append(dict(zip(headers, cells, strict=True)))
    return rows


async def queue(page: Page) -> list[dict[str, str]]:
    return await table(page, "table#queue")
