"""The issuer's signing keys: its metadata discovered (RFC 8414, then OpenID Connect
Discovery), its JWKS fetched with aiohttp, cached, and refetched when a token names a key id
the cache lacks, at most once per `jwks_refetch_s`: a flood of made-up key ids costs the
issuer one request per interval, whatever the flood's size."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson
from jwt import PyJWK
from jwt.exceptions import InvalidKeyError, PyJWKError

from ._oauth_settings import OAuthSettings

_log = logging.getLogger("bridge")

#: Bounds on what the issuer may send us: a document's size, and the keys one set may hold.
MAX_DOCUMENT_BYTES = 256 * 1024
MAX_KEYS = 64


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One of the issuer's public keys: its id, type (RSA, EC, OKP), the algorithm it is
    declared for (None: any of its type's) and the key itself, ready for jwt.decode."""

    kid: str | None
    key_type: str
    alg: str | None
    key: Any


class IssuerUnavailable(Exception):
    """The issuer's metadata or keys could not be fetched (or make no sense), and no keys
    fetched earlier are at hand: tokens cannot be checked now."""


def discovery_urls(issuer: str) -> tuple[str, str]:
    """RFC 8414 §3.1 (well-known segment inserted before the issuer's path), then OpenID
    Connect Discovery 1.0 §4 (appended to it)."""
    parts = urlsplit(issuer.rstrip("/"))
    rfc8414 = urlunsplit(
        (parts.scheme, parts.netloc, "/.well-known/oauth-authorization-server" + parts.path, "", "")
    )
    return rfc8414, issuer.rstrip("/") + "/.well-known/openid-configuration"


class IssuerKeys:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: OAuthSettings,
        clock: Callable[[], float],
    ) -> None:
        self._session = session
        self._settings = settings
        self._clock = clock
        self._jwks_uri: str | None = None
        self._keys: list[SigningKey] = []
        self._fetched_at: float | None = None
        self._last_try: float | None = None
        #: The fetch under way: every caller awaits this one (single flight).
        self._inflight: asyncio.Task[None] | None = None

    async def key(self, kid: str | None) -> SigningKey | None:
        """The issuer's key `kid` (without a kid: its only key), or None when the issuer
        has no such key. Raises IssuerUnavailable when no keys could ever be fetched."""
        if self._inflight is None:
            now = self._clock()
            stale = self._fetched_at is None or now - self._fetched_at >= self._age_limit()
            if (stale or self._find(kid) is None) and self._may_try(now):
                self._last_try = now
                self._inflight = asyncio.create_task(self._refresh(now))
        if self._inflight is not None:
            # Shielded: an agent hanging up must not cancel the fetch every caller awaits
            # (a cancelled first fetch would leave no keys until the next allowed try).
            await asyncio.shield(self._inflight)
        if self._fetched_at is None:
            raise IssuerUnavailable("the issuer's keys could not be fetched yet")
        return self._find(kid)

    async def _refresh(self, now: float) -> None:
        try:
            self._keys = await self._fetch_keys()
            self._fetched_at = now
        except IssuerUnavailable:
            # Keep the keys we have: an issuer blip must not lock every agent out.
            _log.warning("the OAuth issuer's keys could not be fetched", exc_info=True)
        finally:
            self._inflight = None

    def _age_limit(self) -> float:
        return self._settings.jwks_max_age_s

    def _may_try(self, now: float) -> bool:
        return self._last_try is None or now - self._last_try >= self._settings.jwks_refetch_s

    def _find(self, kid: str | None) -> SigningKey | None:
        if kid is None:
            return self._keys[0] if len(self._keys) == 1 else None
        return next((k for k in self._keys if k.kid == kid), None)

    async def _fetch_keys(self) -> list[SigningKey]:
        if self._jwks_uri is None:
            self._jwks_uri = await self._discover()
        document = await self._get(self._jwks_uri)
        raw = document.get("keys")
        if not isinstance(raw, list):
            raise IssuerUnavailable(f"{self._jwks_uri[:200]} holds no `keys` list")
        return [k for k in (_usable(entry) for entry in raw[:MAX_KEYS]) if k is not None]

    async def _discover(self) -> str:
        issuer = self._settings.issuer
        failures = []
        for url in discovery_urls(issuer):
            try:
                metadata = await self._get(url)
            except IssuerUnavailable as exc:
                failures.append(str(exc))
                continue
            # RFC 8414 §3.3: metadata naming another issuer must not be used.
            if metadata.get("issuer") != issuer:
                raise IssuerUnavailable(f"{url[:200]} names another issuer")
            jwks_uri = metadata.get("jwks_uri")
            if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
                raise IssuerUnavailable(f"{url[:200]} has no jwks_uri")
            return jwks_uri
        raise IssuerUnavailable("; ".join(failures))

    async def _get(self, url: str) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=self._settings.fetch_timeout_s)
        try:
            async with self._session.get(url, timeout=timeout, allow_redirects=False) as resp:
                body = await resp.content.read(MAX_DOCUMENT_BYTES + 1)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise IssuerUnavailable(f"GET {url[:200]}: {type(exc).__name__}") from None
        if status != 200:
            raise IssuerUnavailable(f"GET {url[:200]}: HTTP {status}")
        if len(body) > MAX_DOCUMENT_BYTES:
            raise IssuerUnavailable(f"GET {url[:200]}: over {MAX_DOCUMENT_BYTES} bytes")
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise IssuerUnavailable(f"GET {url[:200]}: not JSON") from None
        if not isinstance(document, dict):
            raise IssuerUnavailable(f"GET {url[:200]}: not a JSON object")
        return document


def _usable(entry: Any) -> SigningKey | None:
    """A signing public key, or None: symmetric (`oct`) keys are never taken, whatever the
    issuer publishes, so no token is checked with a secret anyone could read."""
    if not isinstance(entry, dict) or entry.get("kty") not in ("RSA", "EC", "OKP"):
        return None
    if entry.get("use", "sig") != "sig":
        return None
    try:
        key = PyJWK(entry).key
    except (PyJWKError, InvalidKeyError, ValueError, TypeError):
        return None
    kid, alg = entry.get("kid"), entry.get("alg")
    return SigningKey(
        kid if isinstance(kid, str) else None,
        entry["kty"],
        alg if isinstance(alg, str) else None,
        key,
    )
