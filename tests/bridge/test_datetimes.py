"""One strict RFC 3339 date-time parser on both services: a spelling one of them would read
differently from the other, or a year no schedule has, is refused by both, nothing written."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schemas import parse_datetime
from testkit.api import WINDOW

from .conftest import Bridge

#: (spelling, what is wrong with it): each is ISO 8601-ish, or an RFC 3339 shape that is not
#: a real instant, or out of the years a schedule can be in.
BAD_DATE_TIMES = [
    ("2026-11-27 13:00", "space for T, no seconds, no offset"),
    ("2026-11-27 13:00:00Z", "space for T"),
    ("2026-11-27T13:00:00", "naive: no offset"),
    ("2026-11-27T13:00Z", "no seconds"),
    ("2026-W48-5T13:00:00Z", "ISO week date"),
    ("2026-331T13:00:00Z", "ISO ordinal date"),
    ("20261127T130000Z", "ISO basic format"),
    ("2026-11-27T13:00:00+0100", "offset without a colon"),
    ("2026-11-27T13:00:00+01", "offset without minutes"),
    ("2026-11-27T13:00:00+24:00", "offset beyond 23:59"),
    ("2026-11-27T13:00:00.Z", "empty fraction"),
    ("2026-11-27T13:00:00.1234567890Z", "fraction beyond nanoseconds"),
    ("2026-02-30T13:00:00Z", "30 February"),
    ("2026-11-27T24:00:00Z", "hour 24"),
    ("2026-11-27T13:00:60Z", "leap second"),
    ("2026-11-27T13:00:00Z\n", "trailing newline"),
    ("\uff12\uff10\uff12\uff16-11-27T13:00:00Z", "full-width digits"),
    ("0001-01-01T00:00:00Z", "year 1"),
    ("9999-12-31T23:59:59Z", "year 9999"),
    ("1999-12-31T23:59:59Z", "before 2000"),
    ("2100-01-01T00:00:00Z", "after 2099"),
]


@pytest.mark.parametrize(("spelling", "why"), BAD_DATE_TIMES, ids=[w for _, w in BAD_DATE_TIMES])
def test_the_parser_refuses_what_is_not_an_rfc_3339_date_time_in_range(
    spelling: str, why: str
) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message is the parser's own
        parse_datetime(spelling)


def test_the_parser_reads_every_rfc_3339_spelling_as_the_same_instant() -> None:
    instant = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)

    for spelling in (
        "2026-11-27T14:00:00Z",
        "2026-11-27t14:00:00z",
        "2026-11-27T14:00:00.000000000Z",
        "2026-11-27T09:00:00-05:00",
        "2026-11-28T00:00:00+10:00",
    ):
        assert parse_datetime(spelling) == instant, spelling


async def test_a_bad_date_time_is_refused_by_both_services_and_nothing_is_written(
    bridge: Bridge,
) -> None:
    api = bridge.api
    ticket = await api.create_ticket()
    events = await api.count("SELECT count(*) FROM timeline_events")
    refused = []

    for spelling, why in BAD_DATE_TIMES:
        for field in ("window_start", "window_end"):
            window = {**WINDOW, field: spelling}
            via_bridge = await bridge.invoke(
                "ticket.schedule", {"ticket_id": ticket["id"], **window}
            )
            direct = await api.act(ticket["id"], "schedule", window)
            refused.append(
                (
                    why,
                    field,
                    via_bridge.status,
                    via_bridge.body["error"]["code"],
                    direct.status,
                    direct.body["code"],
                )
            )

    assert refused == [
        (why, field, 422, "invalid_arguments", 422, "validation_failed")
        for _, why in BAD_DATE_TIMES
        for field in ("window_start", "window_end")
    ]
    assert bridge.proxy.requests == 0  # the bridge refused each before calling dispatch-api
    assert await api.count("SELECT count(*) FROM timeline_events") == events
    assert (await api.request("GET", f"/v1/tickets/{ticket['id']}")).body["state"] == (
        ticket["state"]
    )


async def test_dispatch_api_takes_lower_case_t_and_z_and_offsets_as_rfc_3339_allows(
    bridge: Bridge,
) -> None:
    ticket = await bridge.api.create_ticket()

    reply = await bridge.api.act(
        ticket["id"],
        "schedule",
        {
            **WINDOW,
            "window_start": "2026-11-27t08:00:00-05:00",
            "window_end": "2026-11-27t15:00:00.5z",
        },
    )

    assert reply.status == 200, reply.body
    assignment = reply.body["ticket"]["assignment"]
    assert parse_datetime(assignment["window_start"]) == datetime(2026, 11, 27, 13, tzinfo=UTC)
    assert assignment["window_end"].startswith("2026-11-27T15:00:00.5")
