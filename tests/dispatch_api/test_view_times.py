"""Times in the views are written as `datetime.isoformat()` writes them, whichever way the
view builds the text (UTC, the common case, is formatted by orjson)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from dispatch_api.service import event_view
from dispatch_api.store import Event


def _event(at: datetime) -> Event:
    return Event(
        ticket_id="8d3c2b1a-0f9e-4d8c-b7a6-958473625140",
        seq=1,
        at=at,
        type="created",
        from_state=None,
        to_state="NEW",
        reason=None,
        actor_type="human",
        actor_id="disp-1",
        role="dispatcher",
        tool_name=None,
        request_id=None,
        correlation_id=None,
        trace_id=None,
        details={},
    )


@pytest.mark.parametrize(
    "at",
    [
        datetime(2026, 12, 3, 23, 43, 30, 123456, tzinfo=UTC),
        datetime(2026, 12, 3, 23, 43, 30, tzinfo=UTC),  # no fraction written
        datetime(2026, 12, 3, 23, 43, 30, 1000, tzinfo=UTC),  # six digits, not three
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 12, 3, 9, 0, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(2026, 12, 3, 9, 0, tzinfo=timezone(timedelta(seconds=3661))),
        datetime(2026, 12, 3, 9, 0, 0, 5),  # naive
    ],
)
def test_a_time_reads_as_isoformat_writes_it(at: datetime) -> None:
    assert event_view(_event(at))["at"] == at.isoformat()
