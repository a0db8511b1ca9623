"""Signing in to the console: a dispatch-api token for a session cookie that only a person
gets, that lasts a bounded time, and that sign-out ends on the server."""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dispatch_api.settings import ApiSettings
from dispatch_api.web import create_app
from testkit.api import Api, FakeClock
from testkit.console import Browser, browser, signed_in


async def session_rows(api: Api) -> int:
    return await api.count("SELECT count(*) FROM console_sessions")


async def test_signing_in_sets_an_http_only_strict_session_cookie_for_the_console_only(
    api: Api,
) -> None:
    async with browser(api) as b:
        reply = await b.sign_in(api.tokens["dispatcher"])

        assert reply.status == 303
        assert reply.headers["Location"] == "/console/queue"
        cookie = reply.headers["Set-Cookie"]
        assert cookie.startswith("dispatch_console=")
        attributes = {a.strip().split("=")[0].lower(): a for a in cookie.split(";")[1:]}
        assert {"httponly", "samesite", "path", "max-age"} <= attributes.keys()
        assert attributes["samesite"].strip() == "SameSite=Strict"
        assert attributes["path"].strip() == "Path=/console"
        assert attributes["max-age"].strip() == "Max-Age=28800"  # 480 minutes
        assert "secure" not in attributes  # plain HTTP here; over TLS it is Secure
        value = b.cookie("dispatch_console")
        assert value is not None
        assert len(value) >= 43
        # Only the digest is stored: a database dump signs nobody in.
        stored = await api.count(
            "SELECT count(*) FROM console_sessions WHERE cookie_sha256 = $1"
            " AND principal_id = 'disp-1'",
            hashlib.sha256(value.encode()).digest(),
        )
        assert stored == 1
        assert (await b.get("/console/queue")).status == 200


@pytest.mark.parametrize("who", ["wrong", "gateway"])
async def test_a_wrong_token_or_a_gateway_token_cannot_sign_in(api: Api, who: str) -> None:
    token = "dsp_not-a-token-anyone-has" if who == "wrong" else api.tokens["gateway"]
    async with browser(api) as b:
        reply = await b.sign_in(token)

        assert reply.status == 401
        assert "That token was not accepted" in reply.text
        assert '<input id="token" name="token" type="password"' in reply.text
        assert b.cookie("dispatch_console") is None
        assert await session_rows(api) == 0
        assert (await b.get("/console/queue")).headers["Location"] == "/console/sign-in"


async def test_sign_out_ends_the_session_on_the_server_so_the_old_cookie_no_longer_works(
    api: Api,
) -> None:
    async with signed_in(api) as b:
        cookie = b.cookie("dispatch_console")
        queue = await b.get("/console/queue")

        reply = await b.post("/console/sign-out", {"csrf_token": queue.csrf_token})

        assert reply.status == 303
        assert reply.headers["Location"] == "/console/sign-in"
        assert await session_rows(api) == 0
    # A copy of the old cookie (kept by an attacker, or a second tab) is worth nothing.
    async with browser(api) as other:
        assert cookie is not None
        other.session.cookie_jar.update_cookies({"dispatch_console": cookie})
        after = await other.get("/console/queue")
        assert after.status == 303
        assert after.headers["Location"] == "/console/sign-in"


async def test_an_expired_session_sends_a_page_to_sign_in_and_refuses_a_form(
    api: Api, clock: FakeClock
) -> None:
    async with signed_in(api) as b:
        queue = await b.get("/console/queue")
        clock.advance(minutes=480, seconds=1)

        page = await b.get("/console/queue")
        form = await b.post("/console/sign-out", {"csrf_token": queue.csrf_token})

        assert page.status == 303
        assert page.headers["Location"] == "/console/sign-in"
        assert form.status == 403
        assert "session has ended" in form.text


async def test_signing_in_purges_expired_sessions(api: Api, clock: FakeClock) -> None:
    async with signed_in(api, "dispatcher"):
        pass
    clock.advance(minutes=481)

    async with signed_in(api, "supervisor"):
        assert await session_rows(api) == 1  # the expired one went, the new one is here


async def test_a_sign_in_without_the_pre_session_csrf_cookie_is_refused(api: Api) -> None:
    async with browser(api) as b:
        form = await b.get("/console/sign-in")
        b.session.cookie_jar.clear()  # a cross-site form post carries no console_csrf

        reply = await b.post(
            "/console/sign-in",
            {"token": api.tokens["dispatcher"], "csrf_token": form.csrf_token},
        )

        assert reply.status == 403
        assert "did not come from the console" in reply.text
        assert await session_rows(api) == 0


async def test_an_oversized_sign_in_form_is_refused_413_without_a_session(api: Api) -> None:
    async with browser(api) as b:
        form = await b.get("/console/sign-in")
        reply = await b.post(
            "/console/sign-in",
            {"token": "x" * 100_000, "csrf_token": form.csrf_token},
        )

        assert reply.status == 413
        assert len(reply.text) < 4096
        assert await session_rows(api) == 0


def self_signed_tls(folder: Path) -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate for 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


async def test_over_tls_the_session_cookie_is_secure(
    api: Api, api_settings: ApiSettings, clock: FakeClock, tmp_path: Path
) -> None:
    server = TestServer(create_app(api_settings, api.database_url, clock=clock))
    await server.start_server(ssl=self_signed_tls(tmp_path))
    try:
        async with aiohttp.ClientSession(
            base_url=str(server.make_url("")),
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            connector=aiohttp.TCPConnector(ssl=False),  # self-signed: not verified here
        ) as session:
            b = Browser(session)
            reply = await b.sign_in(api.tokens["dispatcher"])
    finally:
        await server.close()

    assert reply.status == 303
    attributes = [a.strip().lower() for a in reply.headers["Set-Cookie"].split(";")]
    assert "secure" in attributes
    assert "httponly" in attributes


async def test_behind_a_tls_proxy_the_setting_keeps_the_session_cookie_secure(
    api: Api, api_settings: ApiSettings, clock: FakeClock
) -> None:
    """TLS ends at the k8s Ingress, so dispatch-api sees plain HTTP: with
    DISPATCH_CONSOLE_SECURE_COOKIES both console cookies are Secure anyway (the proxy's
    client speaks HTTPS); without it they are not."""
    flags = []
    for secure in (True, False):
        settings = replace(api_settings, console_secure_cookies=secure)
        server = TestServer(create_app(settings, api.database_url, clock=clock))
        await server.start_server()
        try:
            async with aiohttp.ClientSession(base_url=str(server.make_url(""))) as session:
                async with session.get("/console/sign-in") as form:
                    csrf = form.cookies["console_csrf"]
                # What a browser on the far side of the TLS proxy sends back.
                async with session.post(
                    "/console/sign-in",
                    data={"token": api.tokens["dispatcher"], "csrf_token": csrf.value},
                    headers={"Cookie": f"console_csrf={csrf.value}"},
                    allow_redirects=False,
                ) as signed:
                    assert signed.status == 303
                    flags.append(
                        (bool(csrf["secure"]), bool(signed.cookies["dispatch_console"]["secure"]))
                    )
        finally:
            await server.close()

    assert flags == [(True, True), (False, False)]
