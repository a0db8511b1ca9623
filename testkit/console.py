"""A person's browser session against the console of the `api` fixture's dispatch-api."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp

from .api import Api

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Page:
    status: int
    headers: dict[str, str]
    text: str
    url: str

    @property
    def csrf_token(self) -> str:
        """The CSRF token of the page's first form."""
        match = _CSRF.search(self.text)
        assert match, "the page has no form with a csrf_token"
        return match.group(1)


@dataclass
class Browser:
    """Cookies kept like a browser's (loopback included); redirects not followed, so tests
    see each 303."""

    session: aiohttp.ClientSession

    async def get(self, path: str) -> Page:
        async with self.session.get(path, allow_redirects=False) as resp:
            return Page(resp.status, dict(resp.headers), await resp.text(), str(resp.url))

    async def post(self, path: str, data: dict[str, str]) -> Page:
        async with self.session.post(path, data=data, allow_redirects=False) as resp:
            return Page(resp.status, dict(resp.headers), await resp.text(), str(resp.url))

    async def sign_in(self, token: str) -> Page:
        form = await self.get("/console/sign-in")
        return await self.post("/console/sign-in", {"token": token, "csrf_token": form.csrf_token})

    def cookie(self, name: str) -> str | None:
        for c in self.session.cookie_jar:
            if c.key == name:
                return c.value
        return None


@asynccontextmanager
async def browser(api: Api) -> AsyncIterator[Browser]:
    # unsafe=True: aiohttp's jar keeps no cookies of IP hosts otherwise (the test server's).
    async with aiohttp.ClientSession(
        base_url=api.url, cookie_jar=aiohttp.CookieJar(unsafe=True)
    ) as session:
        yield Browser(session)


@asynccontextmanager
async def signed_in(api: Api, as_: str = "dispatcher") -> AsyncIterator[Browser]:
    """A browser signed in as the `api` fixture's principal `as_`."""
    async with browser(api) as b:
        reply = await b.sign_in(api.tokens[as_])
        assert reply.status == 303, reply.text
        yield b
