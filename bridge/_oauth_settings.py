"""OAuth settings of the bridge as a resource server: the `[oauth]` table and DISPATCH_OAUTH_*.

OAuth is on when `issuer` is set. Tokens must then be JWTs the issuer signed with one of
`algorithms` (asymmetric only: a symmetric algorithm would let anyone holding the issuer's
public key mint tokens), for `audience` (default: the bridge's DISPATCH_PUBLIC_URL).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from settings import SettingsError

#: Asymmetric JWS algorithms (RFC 7518, RFC 8037). `none` and HS* are never accepted.
ASYMMETRIC = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)


@dataclass(frozen=True, slots=True)
class OAuthSettings:
    #: The authorization server whose JWT access tokens are accepted; empty: OAuth is off.
    issuer: str = field(default="", metadata={"env": "DISPATCH_OAUTH_ISSUER"})
    #: The `aud` a token must carry (RFC 8707); empty: the bridge's public URL.
    audience: str = field(default="", metadata={"env": "DISPATCH_OAUTH_AUDIENCE"})
    #: The claim that names the agent's role (dispatcher, technician, supervisor).
    role_claim: str = field(default="dispatch_role", metadata={"env": "DISPATCH_OAUTH_ROLE_CLAIM"})
    algorithms: tuple[str, ...] = field(
        default=("RS256", "PS256", "ES256", "EdDSA"), metadata={"env": "DISPATCH_OAUTH_ALGORITHMS"}
    )
    #: Clock skew tolerated on exp and nbf.
    leeway_s: float = field(default=30.0, metadata={"env": "DISPATCH_OAUTH_LEEWAY_S"})
    #: A token signed by an unknown key refetches the issuer's keys at most this often, so a
    #: flood of made-up key ids cannot become a flood of requests to the issuer.
    jwks_refetch_s: float = field(default=30.0, metadata={"env": "DISPATCH_OAUTH_JWKS_REFETCH_S"})
    #: Keys are refetched this long after they were fetched (a retired key stops working).
    jwks_max_age_s: float = field(default=3600.0, metadata={"env": "DISPATCH_OAUTH_JWKS_MAX_AGE_S"})
    #: How long one request to the issuer (metadata, keys) may take.
    fetch_timeout_s: float = field(default=5.0, metadata={"env": "DISPATCH_OAUTH_FETCH_TIMEOUT_S"})

    def __post_init__(self) -> None:
        if self.issuer and urlsplit(self.issuer).scheme not in ("https", "http"):
            raise SettingsError("DISPATCH_OAUTH_ISSUER: must be an http(s) URL")
        unsafe = sorted(set(self.algorithms) - set(ASYMMETRIC))
        if unsafe or not self.algorithms:
            raise SettingsError(
                f"DISPATCH_OAUTH_ALGORITHMS: {unsafe or 'none'} not accepted;"
                f" choose among {', '.join(ASYMMETRIC)}"
            )
        if not self.role_claim:
            raise SettingsError("DISPATCH_OAUTH_ROLE_CLAIM: must name a claim")
        for name in ("leeway_s", "jwks_refetch_s", "jwks_max_age_s"):
            if getattr(self, name) < 0:
                raise SettingsError(f"DISPATCH_OAUTH_{name.upper()}: must not be negative")
        if self.fetch_timeout_s <= 0:
            raise SettingsError("DISPATCH_OAUTH_FETCH_TIMEOUT_S: must be positive")

    @property
    def enabled(self) -> bool:
        return bool(self.issuer)

    def describe(self) -> dict[str, object]:
        return {
            "issuer": self.issuer or None,
            "audience": self.audience or None,
            "role_claim": self.role_claim,
            "algorithms": list(self.algorithms),
        }
