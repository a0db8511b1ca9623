"""Ticket actions without a row lock held across round trips still serialise: concurrent
duplicates apply once, conflicting actions on one ticket apply one after the other, and a
ticket changed between the read and the write is read again."""

from __future__ import annotations

import asyncio
import uuid

from dispatch_api.store import connect
from testkit.api import Api, ready_to_complete


async def test_twenty_concurrent_completes_with_one_key_complete_the_ticket_once(
    api: Api,
) -> None:
    tid = await ready_to_complete(api)
    key = str(uuid.uuid4())

    replies = await asyncio.gather(
        *(api.act(tid, "complete", {"reason": "fixed"}, key=key) for _ in range(20))
    )

    assert {r.status for r in replies} <= {200, 409}, [r.status for r in replies]
    winners = [r for r in replies if r.status == 200 and "Idempotent-Replayed" not in r.headers]
    assert len(winners) == 1
    for reply in replies:
        if reply.status == 200:
            assert reply.raw == winners[0].raw
        else:
            assert reply.body["code"] == "request_in_progress"
    types = [e["type"] for e in await api.timeline(tid)]
    assert types.count("completed") == 1
    assert types[-1] == "completed"
    assert await api.count("SELECT count(*) FROM idempotency_keys WHERE key = $1", key) == 1


async def test_a_hold_and_a_complete_sent_together_apply_one_after_the_other(api: Api) -> None:
    tickets = [await ready_to_complete(api, n) for n in range(6)]

    pairs = await asyncio.gather(
        *(
            asyncio.gather(
                api.act(tid, "hold", {"cause": "customer", "reason": "away"}),
                api.act(tid, "complete", {"reason": "fixed"}),
            )
            for tid in tickets
        )
    )

    for tid, (hold, complete) in zip(tickets, pairs, strict=True):
        statuses = sorted([hold.status, complete.status])
        assert statuses == [200, 409], (hold.body, complete.body)
        loser = hold if hold.status == 409 else complete
        assert loser.body["code"] == "invalid_transition"
        winner_state = "ON_HOLD" if hold.status == 200 else "COMPLETED"
        events = await api.timeline(tid)
        # The loser saw the winner's state: it was decided after the winner's write.
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert events[-2]["to_state"] == winner_state
        assert events[-1]["type"].endswith("_rejected")
        reply = await api.request("GET", f"/v1/tickets/{tid}")
        assert reply.body["state"] == winner_state


async def test_a_ticket_changed_between_the_read_and_the_write_is_read_again(api: Api) -> None:
    tid = await ready_to_complete(api)
    before = await api.count("SELECT last_seq FROM tickets WHERE id = $1", uuid.UUID(tid))
    other = await connect(api.database_url)
    try:
        # Another writer holds the ticket's row: the action reads it, then waits to write.
        tx = other.transaction()
        await tx.start()
        await other.execute("SELECT 1 FROM tickets WHERE id = $1 FOR UPDATE", uuid.UUID(tid))
        action = asyncio.ensure_future(api.act(tid, "complete", {"reason": "fixed"}))
        for _ in range(500):  # bounded: until the action's write waits on the row
            waiting = await api.count(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE '%act_on_ticket%'"
            )
            if waiting:
                break
            await asyncio.sleep(0.01)
        assert waiting
        # ... and changes it meanwhile: a note on the timeline, as any action appends one.
        await other.execute(
            "UPDATE tickets SET last_seq = last_seq + 1 WHERE id = $1", uuid.UUID(tid)
        )
        await other.execute(
            "INSERT INTO timeline_events (ticket_id, seq, at, type, actor_type, actor_id, role)"
            " VALUES ($1, $2, now(), 'note_added', 'human', 'sup-1', 'supervisor')",
            uuid.UUID(tid),
            before + 1,
        )
        await tx.commit()
        reply = await action
    finally:
        await other.close()

    assert reply.status == 200, reply.body
    assert reply.body["event"]["seq"] == before + 2
    events = await api.timeline(tid)
    assert [e["type"] for e in events[-2:]] == ["note_added", "completed"]
    assert [e["seq"] for e in events] == list(range(1, before + 3))


async def test_a_complete_whose_key_another_request_holds_is_a_retryable_409_doing_nothing(
    api: Api,
) -> None:
    tid = await ready_to_complete(api, 7)
    key = str(uuid.uuid4())
    before = await api.timeline(tid)
    other = await connect(api.database_url)
    try:
        # Another request claimed the key and has not committed (lock_timeout is 1 s here).
        tx = other.transaction()
        await tx.start()
        await other.execute(
            "INSERT INTO idempotency_keys (principal_id, key, fingerprint, method, path,"
            " created_at) VALUES ('sup-1', $1, '\\x00', 'POST', '/v1/tickets', now())",
            key,
        )
        reply = await api.act(tid, "complete", {"reason": "fixed"}, key=key)
        await tx.rollback()
    finally:
        await other.close()

    assert reply.status == 409, reply.body
    assert reply.body["code"] == "request_in_progress"
    assert reply.headers["Retry-After"] == "1"
    assert await api.timeline(tid) == before
    assert await api.count("SELECT count(*) FROM idempotency_keys WHERE key = $1", key) == 0
