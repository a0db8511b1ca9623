"""The life of a ticket through the HTTP API, as the README walkthrough tells it."""

from __future__ import annotations

import base64
import hashlib

from testkit.api import WINDOW, Api


async def test_a_water_leak_is_completed_only_once_its_evidence_is_attached(api: Api) -> None:
    ticket = await api.create_ticket()
    tid = ticket["id"]
    assert ticket["state"] == "READY_TO_SCHEDULE"

    assert (await api.act(tid, "schedule", WINDOW)).body["ticket"]["state"] == "SCHEDULED"
    assert (await api.act(tid, "dispatch")).body["ticket"]["state"] == "DISPATCHED"
    assert (await api.act(tid, "arrive")).body["ticket"]["state"] == "ON_SITE"

    rejected = await api.act(tid, "complete")
    assert rejected.status == 422
    assert rejected.content_type == "application/problem+json"
    assert rejected.body["code"] == "evidence_missing"
    assert [(m["kind"], m["tag"]) for m in rejected.body["missing_evidence"]] == [
        ("photo", "before"),
        ("photo", "after"),
        ("signature", "customer"),
    ]

    for kind, tag in (("photo", "before"), ("photo", "after"), ("signature", "customer")):
        content = f"{kind}-{tag}".encode()
        reply = await api.act(
            tid,
            "evidence",
            {
                "kind": kind,
                "tag": tag,
                "content_type": "image/png",
                "content_base64": base64.b64encode(content).decode(),
                "sha256": hashlib.sha256(content).hexdigest(),
            },
        )
        assert reply.status == 201, reply.body

    done = await api.act(tid, "complete", {"reason": "leak fixed"})
    assert done.status == 200, done.body
    assert done.body["ticket"]["state"] == "COMPLETED"

    events = await api.timeline(tid)
    assert [e["type"] for e in events] == [
        "created",
        "scheduled",
        "dispatched",
        "arrived",
        "completion_rejected",
        "evidence_attached",
        "evidence_attached",
        "evidence_attached",
        "completed",
    ]
    assert [e["seq"] for e in events] == list(range(1, 10))
    assert events[4]["from_state"] == events[4]["to_state"] == "ON_SITE"
    assert events[-1]["reason"] == "leak fixed"
