"""The queue page: what a dispatcher keeps open all day, with the API's visibility rules."""

from __future__ import annotations

import re

from testkit.api import COMPLETE_TICKET, WINDOW, Api, FakeClock
from testkit.console import signed_in


def ticket_links(html: str) -> list[str]:
    return re.findall(r'href="/console/tickets/([0-9a-f-]{36})"', html)


async def test_the_queue_lists_tickets_with_sla_countdowns_missing_fields_and_last_change(
    api: Api,
) -> None:
    body = {k: v for k, v in COMPLETE_TICKET.items() if k != "contact_phone"}
    reply = await api.request("POST", "/v1/tickets", json={**body, "customer_name": "Grace Hopper"})
    draft = reply.body["ticket"]
    async with signed_in(api) as b:
        page = await b.get("/console/queue")

    assert page.status == 200
    assert ticket_links(page.text) == [draft["id"]]
    row = page.text[page.text.index('<tbody id="queue-rows">') :]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    assert cells[1:10] == [
        "NEW",
        "P2",
        "Grace Hopper",
        "0m 00s",
        "in 4h 00m",
        "in 1d 0h",
        "contact",  # a phone or an email
        "—",
        "created by human sup-1, 2026-11-27 09:00:00Z",
    ]
    for header in ("Ticket", "Time in state", "Response due", "Matching technicians"):
        assert f'<th scope="col">{header}</th>' in page.text


async def test_a_breached_target_is_marked_breached(api: Api, clock: FakeClock) -> None:
    await api.create_ticket(priority="P1")  # response due in 2 h
    clock.advance(hours=2, minutes=5)
    async with signed_in(api) as b:
        page = await b.get("/console/queue")

    assert '<td class="breached">breached 5m 00s ago</td>' in page.text


async def test_the_queue_filters_by_state_and_priority(api: Api) -> None:
    p1 = await api.create_ticket(priority="P1")
    p3 = await api.create_ticket(priority="P3")
    scheduled = await api.create_ticket(priority="P3")
    assert (await api.act(scheduled["id"], "schedule", WINDOW)).status == 200
    async with signed_in(api) as b:
        by_priority = await b.get("/console/queue?priority=P3")
        by_both = await b.get("/console/queue?state=READY_TO_SCHEDULE&priority=P3")
        by_state = await b.get("/console/queue?state=SCHEDULED&priority=")
        rows = await b.get("/console/queue/rows?priority=P1")
        bad = await b.get("/console/queue?state=%3Cscript%3E")

    assert sorted(ticket_links(by_priority.text)) == sorted([p3["id"], scheduled["id"]])
    assert ticket_links(by_both.text) == [p3["id"]]
    assert ticket_links(by_state.text) == [scheduled["id"]]
    assert '<option value="SCHEDULED" selected>' in by_state.text
    # The fragment console.js swaps in: the rows alone, same filters.
    assert rows.text.lstrip().startswith('<tbody id="queue-rows">')
    assert "<nav" not in rows.text
    assert ticket_links(rows.text) == [p1["id"]]
    assert bad.status == 400
    assert "state must be one of" in bad.text
    assert "<script>" not in bad.text


async def test_the_queue_refreshes_itself_with_a_static_script_and_has_a_refresh_link(
    api: Api,
) -> None:
    async with signed_in(api) as b:
        page = await b.get("/console/queue?priority=P2")
        script = await b.get("/console/static/console.js")

    assert '<a href="/console/queue?priority=P2">Refresh</a>' in page.text
    assert 'data-rows-url="/console/queue/rows?priority=P2"' in page.text
    assert '<script src="/console/static/console.js" defer></script>' in page.text
    assert script.status == 200
    assert "queue-rows" in script.text
    assert "15000" in script.text


async def test_the_queue_pages_on_with_a_next_page_link(api: Api) -> None:
    created = [(await api.create_ticket())["id"] for _ in range(51)]
    async with signed_in(api) as b:
        first = await b.get("/console/queue")
        following = re.search(r'<a href="([^"]+)" rel="next">Next page</a>', first.text)
        assert following is not None
        second = await b.get(following.group(1).replace("&amp;", "&"))
        forged = await b.get("/console/queue?cursor=bm90LWEtY3Vyc29y")

    assert len(ticket_links(first.text)) == 50
    assert sorted(ticket_links(first.text) + ticket_links(second.text)) == sorted(created)
    assert "Next page" not in second.text
    assert forged.status == 400


async def test_a_technician_sees_only_assigned_tickets_and_another_ticket_page_is_404(
    api: Api,
) -> None:
    mine = await api.create_ticket()
    assert (await api.act(mine["id"], "schedule", WINDOW)).status == 200
    other = await api.create_ticket(customer_name="Someone Else")
    async with signed_in(api, "technician") as b:
        queue = await b.get("/console/queue")
        own_page = await b.get(f"/console/tickets/{mine['id']}")
        other_page = await b.get(f"/console/tickets/{other['id']}")
        unknown = await b.get("/console/tickets/00000000-0000-4000-8000-000000000000")

    assert ticket_links(queue.text) == [mine["id"]]
    assert own_page.status == 200
    assert other_page.status == 404
    assert "Someone Else" not in other_page.text
    # Invisible and missing read the same: ids of others' tickets are not confirmed.
    assert other_page.text.replace(other["id"], "X") == unknown.text.replace(
        "00000000-0000-4000-8000-000000000000", "X"
    )


async def test_without_a_trace_ui_the_trace_id_is_plain_text(api: Api) -> None:
    tid = (await api.create_ticket())["id"]
    async with signed_in(api) as b:
        page = await b.get(f"/console/tickets/{tid}")

    trace_id = (await api.timeline(tid))[0]["trace_id"]
    assert trace_id
    assert f"<td><code>{trace_id}</code></td>" in page.text
