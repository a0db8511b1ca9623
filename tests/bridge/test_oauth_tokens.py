"""Access-token checks that need tokens no real issuer would sign (algorithm confusion, made-up
key ids, odd claims): the tests sign them here, with keys served as a JWKS by a small issuer
on loopback. End-to-end behaviour with a real authorization server: test_oauth_e2e.py."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.utils import base64url_encode

from bridge._jwks import IssuerKeys, discovery_urls
from bridge._oauth import TokenVerifier
from bridge._oauth_settings import OAuthSettings
from bridge.settings import BridgeSettings, load_bridge_settings
from settings import Secret, SettingsError
from tools import ToolError

AUDIENCE = "https://bridge.example"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def public_jwk(private: Any, kid: str) -> dict[str, Any]:
    algorithm = jwt.algorithms.RSAAlgorithm if isinstance(private, rsa.RSAPrivateKey) else None
    if algorithm is None:
        jwk: dict[str, Any] = jwt.algorithms.ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    else:
        jwk = algorithm.to_jwk(private.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Issuer:
    """Discovery (RFC 8414 only) and a JWKS the test edits; counts what it serves."""

    url: str = ""
    jwks: dict[str, Any] = field(default_factory=dict)
    hits: int = 0
    down: bool = False
    #: Cleared: the keys are not served until it is set again.
    serving: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set once the keys have been asked for.
    keys_asked: asyncio.Event = field(default_factory=asyncio.Event)
    metadata_issuer: str | None = None

    def claims(self, **extra: Any) -> dict[str, Any]:
        now = int(time.time())
        return {
            "iss": self.url,
            "aud": AUDIENCE,
            "exp": now + 300,
            "iat": now,
            "client_id": "fleet-7",
            "dispatch_role": "dispatcher",
            "scope": "dispatch:read dispatch:write",
            **extra,
        }


@pytest.fixture
async def issuer() -> AsyncIterator[Issuer]:
    state = Issuer(jwks={"keys": [public_jwk(RSA_KEY, "rsa-1"), public_jwk(EC_KEY, "ec-1")]})
    state.serving.set()

    async def metadata(request: web.Request) -> web.Response:
        state.hits += 1
        issuer = state.metadata_issuer or state.url
        return web.json_response({"issuer": issuer, "jwks_uri": f"{state.url}/keys"})

    async def keys(request: web.Request) -> web.Response:
        state.hits += 1
        state.keys_asked.set()
        await state.serving.wait()
        if state.down:
            return web.Response(status=503)
        return web.json_response(state.jwks)

    app = web.Application()
    app.router.add_get("/.well-known/oauth-authorization-server", metadata)
    app.router.add_get("/keys", keys)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    state.url = str(server.make_url("")).rstrip("/")
    try:
        yield state
    finally:
        await server.close()


@dataclass
class Verifier:
    check: TokenVerifier
    keys: IssuerKeys
    clock: FakeClock


@pytest.fixture
async def verifier(issuer: Issuer) -> AsyncIterator[Verifier]:
    clock = FakeClock()
    settings = OAuthSettings(issuer=issuer.url, jwks_refetch_s=30, jwks_max_age_s=3600)
    async with aiohttp.ClientSession() as session:
        keys = IssuerKeys(session, settings, clock)
        yield Verifier(
            TokenVerifier(keys, settings, (AUDIENCE,), frozenset({"agent-sup"})), keys, clock
        )


def sign(claims: dict[str, Any], kid: str = "rsa-1", key: Any = RSA_KEY, alg: str = "RS256") -> str:
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


async def refusal(verifier: Verifier, token: str) -> ToolError:
    with pytest.raises(ToolError) as caught:
        await verifier.check.agent(token)
    return caught.value


async def test_a_valid_client_credentials_token_names_its_client_role_and_scopes(
    verifier: Verifier, issuer: Issuer
) -> None:
    agent = await verifier.check.agent(sign(issuer.claims()))

    assert (agent.id, agent.role, agent.scopes) == (
        "fleet-7",
        "dispatcher",
        frozenset({"dispatch:read", "dispatch:write"}),
    )


async def test_a_flood_of_unknown_key_ids_costs_the_issuer_one_fetch_per_interval(
    verifier: Verifier, issuer: Issuer
) -> None:
    await verifier.check.agent(sign(issuer.claims()))  # discovery + keys: 2 requests

    refused = [await refusal(verifier, sign(issuer.claims(), kid=f"k{i}")) for i in range(200)]
    hits_within_the_interval = issuer.hits
    verifier.clock.now += 30
    later = [await refusal(verifier, sign(issuer.claims(), kid=f"j{i}")) for i in range(200)]

    assert hits_within_the_interval == 2  # the keys were fetched just now: no refetch
    assert issuer.hits == 3  # one refetch per 30 s interval, whatever the flood
    assert {e.code for e in refused + later} == {"unauthenticated"}
    assert "is not one of the issuer's keys" in refused[0].message


async def test_concurrent_first_tokens_share_one_fetch_that_a_hang_up_does_not_cancel(
    verifier: Verifier, issuer: Issuer
) -> None:
    issuer.serving.clear()
    token = sign(issuer.claims())
    impatient = asyncio.create_task(verifier.check.agent(token))
    patient = [asyncio.create_task(verifier.check.agent(token)) for _ in range(50)]
    async with asyncio.timeout(10):
        await issuer.keys_asked.wait()  # discovery answered, the keys request is held
    impatient.cancel()  # as aiohttp cancels the handler of an agent that hung up

    issuer.serving.set()
    agents = await asyncio.gather(*patient)

    assert {a.id for a in agents} == {"fleet-7"}
    assert issuer.hits == 2
    assert impatient.cancelled()


async def test_an_hmac_token_keyed_with_the_issuers_public_key_is_refused(
    verifier: Verifier, issuer: Issuer
) -> None:
    # The classic confusion: HS256 "signed" with the RSA public key everyone can fetch.
    pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    head = base64url_encode(b'{"alg":"HS256","kid":"rsa-1","typ":"JWT"}').decode()
    payload = base64url_encode(orjson.dumps(issuer.claims())).decode()
    mac = hmac.new(pem, f"{head}.{payload}".encode(), hashlib.sha256).digest()
    token = f"{head}.{payload}.{base64url_encode(mac).decode()}"

    error = await refusal(verifier, token)

    assert error.code == "unauthenticated"
    assert "its algorithm 'HS256' is not accepted" in error.message
    assert issuer.hits == 0  # refused before any key was looked up


async def test_a_token_whose_algorithm_does_not_fit_its_key_is_refused(
    verifier: Verifier, issuer: Issuer
) -> None:
    token = sign(issuer.claims(), kid="rsa-1", key=EC_KEY, alg="ES256")  # an RSA key's kid

    error = await refusal(verifier, token)

    assert "does not fit its signing key" in error.message


async def test_a_key_removed_by_the_issuer_stops_working_once_the_cache_is_too_old(
    verifier: Verifier, issuer: Issuer
) -> None:
    token = sign(issuer.claims(), kid="ec-1", key=EC_KEY, alg="ES256")
    assert (await verifier.check.agent(token)).id == "fleet-7"
    issuer.jwks = {"keys": [public_jwk(RSA_KEY, "rsa-1")]}

    still_cached = await verifier.check.agent(token)
    verifier.clock.now += 3600
    error = await refusal(verifier, token)

    assert still_cached.id == "fleet-7"
    assert "is not one of the issuer's keys" in error.message


async def test_an_issuer_that_cannot_be_reached_is_a_retryable_503_not_the_agents_fault(
    verifier: Verifier, issuer: Issuer
) -> None:
    issuer.down = True

    error = await refusal(verifier, sign(issuer.claims()))

    assert (error.code, error.retryable) == ("upstream_unavailable", True)


async def test_an_issuer_blip_keeps_the_keys_already_fetched(
    verifier: Verifier, issuer: Issuer
) -> None:
    token = sign(issuer.claims())
    await verifier.check.agent(token)
    issuer.down = True
    verifier.clock.now += 3600  # the cache is stale, and the refetch fails

    assert (await verifier.check.agent(token)).id == "fleet-7"


async def test_metadata_that_names_another_issuer_is_not_used(
    verifier: Verifier, issuer: Issuer
) -> None:
    issuer.metadata_issuer = "https://impostor.example"

    error = await refusal(verifier, sign(issuer.claims()))

    assert error.code == "upstream_unavailable"


@pytest.mark.parametrize(
    ("claims", "says"),
    [
        ({"dispatch_role": None}, "its dispatch_role claim must name one role of"),
        ({"dispatch_role": "admin"}, "its dispatch_role claim must name one role of"),
        ({"dispatch_role": ["dispatcher", "supervisor"]}, "claim must name one role"),
        ({"client_id": None}, "it names no subject (sub, client_id or azp)"),
        ({"sub": "agent-sup"}, "its sub 'agent-sup' is the id of an agent key"),
        ({"sub": "x" * 500}, "its sub must be 1-128 letters"),
        ({"exp": None}, "it has no exp claim"),
        ({"nbf": int(time.time()) + 3600}, "it is not valid yet"),
    ],
)
async def test_a_token_with_unusable_claims_is_refused_saying_which(
    verifier: Verifier, issuer: Issuer, claims: dict[str, Any], says: str
) -> None:
    base = issuer.claims(**claims)
    token = sign({k: v for k, v in base.items() if v is not None})

    error = await refusal(verifier, token)

    assert error.code == "unauthenticated"
    assert says in error.message
    assert len(error.message) < 300


async def test_a_role_claim_may_be_a_list_holding_one_role(
    verifier: Verifier, issuer: Issuer
) -> None:
    claims = issuer.claims(dispatch_role=["Task.Read", "technician"], scp=["x"])
    del claims["scope"]
    token = sign(claims)

    agent = await verifier.check.agent(token)

    assert (agent.role, agent.scopes) == ("technician", frozenset({"x"}))


async def test_garbage_and_huge_tokens_get_a_small_refusal(verifier: Verifier) -> None:
    garbage = await refusal(verifier, "a.b.c")
    huge = await refusal(verifier, "a." + "b" * 20_000 + ".c")

    assert "it is not a well-formed JWT" in garbage.message
    assert "longer than 8192 characters" in huge.message
    assert len(huge.message) < 200


def test_discovery_follows_rfc8414_then_openid_connect_for_an_issuer_with_a_path() -> None:
    assert discovery_urls("https://login.example/tenant-1") == (
        "https://login.example/.well-known/oauth-authorization-server/tenant-1",
        "https://login.example/tenant-1/.well-known/openid-configuration",
    )


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"DISPATCH_OAUTH_ISSUER": "https://login.example"}, "DISPATCH_PUBLIC_URL: is required"),
        ({"DISPATCH_STATIC_KEYS": "off"}, "DISPATCH_STATIC_KEYS: off needs DISPATCH_OAUTH_ISSUER"),
        (
            {
                "DISPATCH_OAUTH_ISSUER": "https://login.example",
                "DISPATCH_PUBLIC_URL": "https://bridge.example",
                "DISPATCH_OAUTH_ALGORITHMS": "RS256,HS256",
            },
            "DISPATCH_OAUTH_ALGORITHMS: ['HS256'] not accepted",
        ),
    ],
)
def test_settings_that_would_leave_agents_locked_out_or_unsafe_stop_start_up(
    env: dict[str, str], says: str
) -> None:
    with pytest.raises(SettingsError, match=says.replace("[", r"\[").replace("]", r"\]")):
        load_bridge_settings(env, gateway_token=Secret("t"))


def test_oauth_settings_come_from_the_oauth_table_and_the_environment(tmp_path: Any) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(
        '[bridge]\npublic_url = "https://bridge.example"\nstatic_keys = false\n'
        '[oauth]\nissuer = "https://login.example"\nrole_claim = "roles"\n'
    )

    settings: BridgeSettings = load_bridge_settings(
        {"DISPATCH_OAUTH_AUDIENCE": "api://dispatch"}, config
    )

    assert (settings.static_keys, settings.public_url) == (False, "https://bridge.example")
    assert (settings.oauth.issuer, settings.oauth.role_claim, settings.oauth.audience) == (
        "https://login.example",
        "roles",
        "api://dispatch",
    )
