"""The bridge as an OAuth 2.1 resource server: JWT access tokens from one issuer checked
into an `Agent` (RFC 9068 profile, RFC 8725 practices).

Checked, in this order, each refusal a ToolError `unauthenticated` whose message names what
is wrong (never echoing more than a bounded piece of the token): the JWS algorithm is on the
allow-list (asymmetric only: never `none`, never HS* keyed with a public key), `iss` is the
configured issuer, the signing key is one of the issuer's (a kid the cache lacks refetches
the JWKS at a bounded rate, bridge/_jwks.py), its type fits the algorithm, the signature,
`exp` and `nbf` (with leeway), `aud` is this resource (RFC 8707). The agent is `sub` (or
`client_id`, `azp`), its role the role claim, its scopes `scope` (or `scp`). An issuer that
cannot be reached is `upstream_unavailable` (503, retryable), not the agent's fault.
"""

from __future__ import annotations

import re
from typing import Any

import jwt
from jwt.exceptions import (
    DecodeError,
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAudienceError,
    InvalidIssuerError,
    InvalidSignatureError,
    InvalidTokenError,
    MissingRequiredClaimError,
)

from tools import ROLES, ToolError

from ._agents import Agent
from ._jwks import IssuerKeys, IssuerUnavailable
from ._oauth_settings import OAuthSettings

#: A bearer token longer than this is refused before it is parsed.
MAX_TOKEN_CHARS = 8192
_AGENT_ID = re.compile(r"[A-Za-z0-9._:@+=-]{1,128}")
#: Which key types each algorithm family verifies with.
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


def _refused(message: str) -> ToolError:
    return ToolError("unauthenticated", f"The access token was refused: {message}.")


def _shown(value: Any) -> str:
    return repr(value)[:64]


class TokenVerifier:
    def __init__(
        self,
        keys: IssuerKeys,
        settings: OAuthSettings,
        audiences: tuple[str, ...],
        static_ids: frozenset[str] = frozenset(),
    ) -> None:
        self._keys = keys
        self._settings = settings
        #: The first is the resource; a token for any of them is for this bridge.
        self._audiences = audiences
        #: Agent-key ids: a token's subject may not take one over (one namespace of actors).
        self._static_ids = static_ids

    @property
    def keys(self) -> IssuerKeys:
        return self._keys

    async def agent(self, token: str) -> Agent:
        """The agent the token names; ToolError `unauthenticated` when it is refused,
        `upstream_unavailable` when the issuer's keys cannot be had."""
        if len(token) > MAX_TOKEN_CHARS:
            raise _refused(f"it is longer than {MAX_TOKEN_CHARS} characters")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except DecodeError:
            raise _refused("it is not a well-formed JWT") from None
        alg = header.get("alg")
        if alg not in self._settings.algorithms:
            raise _refused(
                f"its algorithm {_shown(alg)} is not accepted; accepted:"
                f" {', '.join(self._settings.algorithms)}"
            )
        issuer = self._settings.issuer
        if unverified.get("iss") != issuer:
            # Before any key lookup: a foreign issuer's kid must not trigger a refetch.
            raise _refused(f"it was issued by {_shown(unverified.get('iss'))}, not by {issuer}")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise _refused("its kid is not a string")
        try:
            key = await self._keys.key(kid)
        except IssuerUnavailable:
            raise ToolError(
                "upstream_unavailable",
                "The access token cannot be checked: the OAuth issuer's keys are unavailable."
                " Retry shortly.",
                retryable=True,
                retry_after_ms=1000,
            ) from None
        if key is None:
            raise _refused(f"its signing key {_shown(kid)} is not one of the issuer's keys")
        if _KEY_TYPES.get(str(alg)[:2]) != key.key_type or key.alg not in (None, alg):
            raise _refused(f"its algorithm {_shown(alg)} does not fit its signing key")
        claims = self._decode(token, key.key, str(alg))
        return Agent(self._identity(claims), self._role(claims), _scopes(claims))

    def _decode(self, token: str, key: Any, alg: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=list(self._audiences),
                issuer=self._settings.issuer,
                leeway=self._settings.leeway_s,
                options={"require": ["exp", "iss", "aud"]},
            )
        except InvalidSignatureError:
            raise _refused("its signature does not verify") from None
        except ExpiredSignatureError:
            raise _refused("it has expired; get a new one from the issuer") from None
        except ImmatureSignatureError:
            raise _refused("it is not valid yet (nbf or iat is in the future)") from None
        except InvalidAudienceError:
            raise _refused(
                f"it is not for this resource; its audience (aud) must be {self._audiences[0]}"
            ) from None
        except InvalidIssuerError:
            raise _refused(f"it was not issued by {self._settings.issuer}") from None
        except MissingRequiredClaimError as exc:
            raise _refused(f"it has no {exc.claim} claim") from None
        except InvalidTokenError:
            raise _refused("it is not a valid JWT") from None
        return claims

    def _identity(self, claims: dict[str, Any]) -> str:
        # sub; a client-credentials token may name only its client (RFC 9068 client_id, azp).
        for claim in ("sub", "client_id", "azp"):
            value = claims.get(claim)
            if value is None:
                continue
            if not isinstance(value, str) or not _AGENT_ID.fullmatch(value):
                raise _refused(f"its {claim} must be 1-128 letters, digits or ._:@+=-")
            if value in self._static_ids:
                raise _refused(f"its {claim} {value!r} is the id of an agent key")
            return value
        raise _refused("it names no subject (sub, client_id or azp)")

    def _role(self, claims: dict[str, Any]) -> str:
        name = self._settings.role_claim
        value = claims.get(name)
        roles = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        known = {r for r in roles if isinstance(r, str) and r in ROLES}
        if len(known) != 1:
            raise _refused(f"its {name} claim must name one role of {', '.join(sorted(ROLES))}")
        return known.pop()


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    raw = claims.get("scope")
    if raw is None:
        raw = claims.get("scp", "")
    items = raw.split() if isinstance(raw, str) else raw if isinstance(raw, list) else []
    return frozenset(s for s in items[:100] if isinstance(s, str))
