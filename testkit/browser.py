"""A real browser for the console: Debian's Chromium driven by Playwright's Python driver.

- `launch(playwright)`: headless Chromium from `/usr/bin/chromium` (`.ci/ensure-tools`
  installs it), with the flags this machine's closed network needs;
- `Watch(page)`: every dialog, console message and page error the page raises, so a test can
  say "nothing ran" (the XSS case) instead of hoping;
- `sign_in(page, console_url, token)`: the sign-in form, as a person fills it;
- `png(width, height, rgb)`: a real PNG (for thumbnails), made without an imaging library.

Playwright never downloads a browser here: `executable_path` points at the Debian one.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field

from playwright.async_api import Browser, ConsoleMessage, Dialog, Page, Playwright

#: Debian's package `chromium`.
CHROMIUM = "/usr/bin/chromium"
#: Without the background-networking flags Chromium keeps dialling Google's hosts, which the
#: closed network here refuses many at a time; --no-sandbox because CI runs as root.
LAUNCH_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


async def launch(playwright: Playwright) -> Browser:
    """Headless Chromium with a fresh profile (Playwright makes a temporary user-data-dir)."""
    if not os.access(CHROMIUM, os.X_OK):
        raise RuntimeError(
            f"no browser at {CHROMIUM}: install the Debian package chromium"
            " (.ci/ensure-tools does, as root)"
        )
    return await playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=list(LAUNCH_ARGS)
    )


@dataclass
class Watch:
    """What a page did on its own: dialogs (dismissed at once), console output, errors."""

    dialogs: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @classmethod
    def on(cls, page: Page) -> Watch:
        watch = cls()
        page.on("dialog", watch._dialog)
        page.on("console", watch._console)
        page.on("pageerror", lambda error: watch.errors.append(str(error)))
        return watch

    async def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        await dialog.dismiss()

    def _console(self, message: ConsoleMessage) -> None:
        # Chromium asks every site for /favicon.ico on its own; its 404 is no page's doing.
        if message.location.get("url", "").endswith("/favicon.ico"):
            return
        self.console.append(f"{message.type}: {message.text} ({message.location.get('url')})")


async def sign_in(page: Page, console_url: str, token: str) -> None:
    """Open the sign-in page, type `token` into its labelled field, press "Sign in"."""
    await page.goto(console_url.rstrip("/") + "/sign-in")
    await page.get_by_label("dispatch-api token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_load_state()


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A `width` x `height` PNG of one colour (8-bit RGB, no interlace)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(rgb) * width  # filter byte 0 (None), then the pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )
