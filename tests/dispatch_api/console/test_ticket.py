"""The ticket page tells the "why" story: who did what through which tool under which ids,
what was refused and what it lacked, and the evidence, downloadable."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from dispatch_api.settings import ApiSettings
from testkit.api import COMPLETE_TICKET, WINDOW, Api
from testkit.console import signed_in

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


@pytest.fixture
def api_settings() -> ApiSettings:
    return ApiSettings(
        db_pool_min=1,
        db_pool_max=8,
        metrics_refresh_s=0,
        trace_ui_url="https://jaeger.example/trace/{trace_id}",
    )


async def on_site(api: Api) -> str:
    tid: str = (await api.create_ticket())["id"]
    for action, body in (("schedule", WINDOW), ("dispatch", None), ("arrive", None)):
        assert (await api.act(tid, action, body)).status == 200
    return tid


def timeline_rows(html: str) -> list[list[str]]:
    table = html[html.index('<h2 id="timeline">') : html.index('<h2 id="evidence">')]
    return [
        [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)[1:]
    ]


async def test_the_timeline_shows_actor_role_tool_request_id_and_a_trace_link(api: Api) -> None:
    reply = await api.request(
        "POST",
        "/v1/tickets",
        json=COMPLETE_TICKET,
        as_="gateway",
        headers={
            "X-Actor-Type": "agent",
            "X-Actor-Id": "triage-agent",
            "X-Actor-Role": "dispatcher",
            "X-Tool-Name": "ticket.create",
            "X-Request-ID": "req-console-1",
            "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01",
        },
    )
    tid = reply.body["ticket"]["id"]
    assert (await api.act(tid, "schedule", WINDOW)).status == 200
    async with signed_in(api) as b:
        page = await b.get(f"/console/tickets/{tid}")

    assert page.status == 200
    assert f"<h1>Ticket {tid} — Ada Lovelace</h1>" in page.text
    created, scheduled = timeline_rows(page.text)
    assert created == [
        "1",
        "2026-11-27 09:00:00Z",
        "created",
        "— → READY_TO_SCHEDULE",
        "agent triage-agent",
        "dispatcher",
        "ticket.create",
        "—",
        "req-console-1",
        TRACE_ID,
    ]
    assert f'<a href="https://jaeger.example/trace/{TRACE_ID}"><code>{TRACE_ID}</code></a>' in (
        page.text
    )
    assert scheduled[2:7] == [
        "scheduled",
        "READY_TO_SCHEDULE → SCHEDULED",
        "human sup-1",
        "supervisor",
        "—",
    ]
    # SLA state and what may happen next, by API action and agent tool.
    assert "<dt>Response due</dt><dd>in 4h 00m (2026-11-27 13:00:00Z)</dd>" in page.text
    assert "<tr><td>dispatch</td><td>ticket.dispatch</td></tr>" in page.text


async def test_a_rejected_completion_is_shown_with_the_evidence_it_lacked(api: Api) -> None:
    tid = await on_site(api)
    refused = await api.act(tid, "complete", {"reason": "all done"})
    assert refused.status == 422
    missing = refused.body["missing_evidence"]
    async with signed_in(api) as b:
        page = await b.get(f"/console/tickets/{tid}")

    section = page.text[
        page.text.index('<h2 id="rejected">') : page.text.index('<h2 id="timeline">')
    ]
    assert "completion_rejected (evidence_missing) by human sup-1" in section
    for m in missing:
        assert f"<li>{m['kind']}" in section
        if m["tag"]:
            assert f"tagged {m['tag']}" in section
    assert '<tr class="rejected">' in page.text


async def test_evidence_shows_its_metadata_a_thumbnail_and_downloads_as_an_attachment(
    api: Api,
) -> None:
    tid = await on_site(api)
    photo = {
        "kind": "photo",
        "tag": "before",
        "content_type": "image/png",
        "content_base64": base64.b64encode(PNG).decode(),
        "sha256": hashlib.sha256(PNG).hexdigest(),
    }
    attached = await api.act(tid, "evidence", photo)
    assert attached.status == 201, attached.body
    eid = attached.body["evidence"]["id"]
    linked = {
        "kind": "document",
        "tag": "readings",
        "content_type": "application/pdf",
        "uri": "https://files.example/readings/42.pdf",
        "sha256": "ab" * 32,
        "size_bytes": 48213,
    }
    assert (await api.act(tid, "evidence", linked)).status == 201
    async with signed_in(api) as b:
        page = await b.get(f"/console/tickets/{tid}")
        content_url = f"/console/tickets/{tid}/evidence/{eid}/content"
        download = await b.session.get(content_url)
        body = await download.read()

    rows = page.text[page.text.index('<h2 id="evidence">') :]
    assert "<td>photo</td>\n<td>before</td>\n<td>image/png</td>\n<td>264 B</td>" in rows
    assert f"<code>{hashlib.sha256(PNG).hexdigest()}</code>" in rows
    assert "<td>human sup-1 (supervisor)</td>" in rows
    assert f'<img src="{content_url}" alt="photo before" class="thumbnail"' in rows
    assert f'<a href="{content_url}">Download</a>' in rows
    # Referenced, not stored: its uri, no download and no thumbnail.
    assert "<code>https://files.example/readings/42.pdf</code>" in rows
    assert rows.count("Download</a>") == 1
    assert download.status == 200
    assert body == PNG
    assert download.headers["Content-Type"] == "image/png"
    assert download.headers["Content-Disposition"] == f'attachment; filename="{eid}"'


async def test_a_technician_cannot_download_evidence_of_a_ticket_not_theirs(api: Api) -> None:
    tid = (await api.create_ticket())["id"]
    note = {
        "kind": "note",
        "content_type": "text/plain",
        "content_base64": base64.b64encode(b"gate code 1234").decode(),
        "sha256": hashlib.sha256(b"gate code 1234").hexdigest(),
    }
    eid = (await api.act(tid, "evidence", note)).body["evidence"]["id"]
    async with signed_in(api, "other_technician") as b:
        reply = await b.get(f"/console/tickets/{tid}/evidence/{eid}/content")

    assert reply.status == 404
    assert "gate code" not in reply.text
