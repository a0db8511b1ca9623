"""A real OAuth 2 authorization server for the tests: testkit/oauth_issuer/issuer.mjs
(oauth2-mock-server on node) in a process of its own, on a free loopback port.

Tests ask it for tokens as an agent platform would (client_credentials, client_secret_basic,
RFC 8707 `resource`); they never sign tokens themselves. Node and the package come from
`.ci/ensure-tools`; without them the tests that need an issuer fail, saying so.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

FOLDER = Path(__file__).resolve().parent / "oauth_issuer"
HOW_TO_INSTALL = (
    "the OAuth end-to-end tests need node and testkit/oauth_issuer/node_modules:"
    " run .ci/ensure-tools"
)


@dataclass(frozen=True, slots=True)
class Client:
    """A registered client: its secret, the role claim its tokens carry, the scopes it may be
    granted, and its tokens' lifetime (negative: issued already expired)."""

    secret: str
    role: str | None
    scopes: tuple[str, ...]
    ttl_s: int = 3600


class Issuer:
    def __init__(self, process: asyncio.subprocess.Process, url: str) -> None:
        self._process = process
        self.url = url

    @classmethod
    async def start(cls, clients: Mapping[str, Client]) -> Issuer:
        """Raises RuntimeError (saying how to install) when node or the package is missing."""
        node = shutil.which("node")
        if node is None or not (FOLDER / "node_modules" / "oauth2-mock-server").is_dir():
            raise RuntimeError(HOW_TO_INSTALL)
        registry = {
            cid: {"secret": c.secret, "role": c.role, "scopes": list(c.scopes), "ttl_s": c.ttl_s}
            for cid, c in clients.items()
        }
        process = await asyncio.create_subprocess_exec(
            node,
            str(FOLDER / "issuer.mjs"),
            orjson.dumps(registry).decode(),
            cwd=FOLDER,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        line = b""
        try:
            line = await asyncio.wait_for(process.stdout.readline(), 30)
            url = orjson.loads(line)["url"]
        except (TimeoutError, orjson.JSONDecodeError, KeyError):
            process.kill()
            await process.wait()
            raise RuntimeError(f"the OAuth issuer did not start: {line[:200]!r}") from None
        return cls(process, url)

    async def close(self) -> None:
        if self._process.returncode is None:
            self._process.terminate()
            try:
                await asyncio.wait_for(self._process.wait(), 10)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()

    async def token(
        self, client_id: str, secret: str, *, scope: str = "", resource: str | None = None
    ) -> str:
        """An access token from the client-credentials grant."""
        form = {"grant_type": "client_credentials", "scope": scope}
        if resource is not None:
            form["resource"] = resource
        basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        body = await self._post("/token", form, {"Authorization": f"Basic {basic}"})
        token: str = body["access_token"]
        return token

    async def rotate(self) -> str:
        """Sign with a new key from now on, still publishing the old one; the new kid."""
        kid: str = (await self._post("/admin/rotate"))["kid"]
        return kid

    async def retire(self) -> None:
        """Stop publishing every key but the newest."""
        await self._post("/admin/retire")

    async def _post(
        self, path: str, form: dict[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> Any:
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.url + path, data=form or {}, headers=headers) as resp,
        ):
            assert resp.status == 200, await resp.text()
            return await resp.json()
