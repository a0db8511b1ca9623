"""The console's defences: headers on every response, escaping of attacker-controlled
text, CSRF on every form, and the token kept out of URLs, pages and logs."""

from __future__ import annotations

import base64
import hashlib
import re
import uuid

import pytest

from testkit.api import Api, parsed_logs
from testkit.console import browser, signed_in

SCRIPT = "<script>alert('owned')</script>"
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


async def test_every_console_response_carries_the_security_headers(api: Api) -> None:
    tid = (await api.create_ticket())["id"]
    note = {
        "kind": "note",
        "content_type": "text/plain",
        "content_base64": base64.b64encode(b"<html>not a page</html>").decode(),
        "sha256": hashlib.sha256(b"<html>not a page</html>").hexdigest(),
    }
    eid = (await api.act(tid, "evidence", note)).body["evidence"]["id"]
    async with browser(api) as anonymous:
        before = [
            await anonymous.get("/console/sign-in"),
            await anonymous.get("/console/queue"),  # 303 to sign-in
            await anonymous.post("/console/sign-out", {}),  # 403
            await anonymous.sign_in("wrong"),  # 401
        ]
    async with signed_in(api) as b:
        pages = [
            await b.get("/console/"),
            await b.get("/console/queue"),
            await b.get("/console/queue/rows"),
            await b.get("/console/queue?priority=P9"),  # 400
            await b.get(f"/console/tickets/{tid}"),
            await b.get("/console/tickets/not-a-uuid"),  # 404
            await b.get("/console/no-such-page"),  # 404
            await b.get(f"/console/tickets/{tid}/evidence/{eid}/content"),
        ]
        static = await b.get("/console/static/console.css")

    statuses = [p.status for p in before + pages]
    assert statuses == [200, 303, 403, 401, 303, 200, 200, 400, 200, 404, 404, 200]
    for reply in [*before, *pages, static]:
        for name, value in HEADERS.items():
            assert reply.headers.get(name) == value, (reply.url, name)
    for reply in before + pages:
        assert reply.headers["Cache-Control"] == "no-store", reply.url
    assert static.headers.get("Cache-Control") != "no-store"
    # Error pages are pages for people, not problem+json.
    assert all(p.headers["Content-Type"].startswith("text/html") for p in pages[3:7])


async def test_a_script_in_a_customer_name_and_in_a_reason_renders_as_text(api: Api) -> None:
    tid = (await api.create_ticket(customer_name=SCRIPT))["id"]
    assert (await api.act(tid, "cancel", {"reason": SCRIPT})).status == 200
    async with signed_in(api) as b:
        queue = await b.get("/console/queue")
        ticket = await b.get(f"/console/tickets/{tid}")

    escaped = "&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;"
    assert escaped in queue.text
    assert ticket.text.count(escaped) >= 2  # the heading and the timeline's reason
    for page in (queue, ticket):
        assert re.findall(r"<script[^>]*>", page.text) == [
            '<script src="/console/static/console.js" defer>'
        ]


@pytest.mark.parametrize("token", [None, "", "forged-token"])
async def test_a_form_without_the_right_csrf_token_is_refused_and_changes_nothing(
    api: Api, token: str | None
) -> None:
    async with signed_in(api) as b:
        form = {} if token is None else {"csrf_token": token}

        reply = await b.post("/console/sign-out", form)

        assert reply.status == 403
        assert "did not come from the console" in reply.text
        assert len(reply.text) < 4096
        assert await api.count("SELECT count(*) FROM console_sessions") == 1
        assert (await b.get("/console/queue")).status == 200  # still signed in


async def test_another_sessions_csrf_token_does_not_pass(api: Api) -> None:
    async with signed_in(api, "supervisor") as other:
        foreign = (await other.get("/console/queue")).csrf_token
    async with signed_in(api) as b:
        reply = await b.post("/console/sign-out", {"csrf_token": foreign})

        assert reply.status == 403
        assert (await b.get("/console/queue")).status == 200


async def test_the_token_appears_in_no_url_page_or_log_line(
    api: Api, log_lines: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    token = api.tokens["dispatcher"]
    tid = (await api.create_ticket())["id"]
    async with browser(api) as b:
        refused = await b.sign_in(token + "x")
        accepted = await b.sign_in(token)
        pages = [await b.get("/console/queue"), await b.get(f"/console/tickets/{tid}")]

    for reply in [refused, accepted, *pages]:
        assert token not in reply.url
        assert token not in reply.text
        assert token not in str(reply.headers)
    logged = b"\n".join(log_lines).decode() + caplog.text
    assert token not in logged
    # The console's requests are logged like the API's, naming who acted, never with what.
    sign_ins = [
        (line["status_code"], line["actor_id"], line["role"])
        for line in parsed_logs(log_lines)
        if line.get("endpoint") == "/console/sign-in" and line.get("method") == "POST"
    ]
    assert sign_ins == [(401, None, None), (303, "disp-1", "dispatcher")]


#: Console routes anyone may reach: the sign-in form and the static files.
_OPEN = ("/console/sign-in", "/console/static")


async def test_every_console_route_but_sign_in_and_static_needs_a_session(api: Api) -> None:
    """Without a session (none, or a made-up cookie) a page sends the browser to sign in
    and a form is refused 403; nothing is shown or done."""
    assert api.app is not None
    checked = []
    for route in api.app.router.routes():
        assert route.resource is not None
        template = route.resource.canonical
        if not template.startswith("/console") or template.startswith(_OPEN):
            continue
        path = template.replace("{ticket_id}", str(uuid.uuid4()))
        path = path.replace("{evidence_id}", str(uuid.uuid4()))
        path = path.replace("{approval_id}", str(uuid.uuid4()))
        for cookie in ({}, {"Cookie": "dispatch_console=made-up"}):
            async with api.session.request(
                route.method, path, headers=cookie, allow_redirects=False
            ) as resp:
                status, location = resp.status, resp.headers.get("Location")
            where = f"{route.method} {template} {cookie}"
            if route.method == "POST":
                assert status == 403, where
            else:
                assert (status, location) == (303, "/console/sign-in"), where
        checked.append((route.method, template))
    assert ("GET", "/console/tickets/{ticket_id}") in checked
    assert ("POST", "/console/approvals/{approval_id}/approve") in checked
