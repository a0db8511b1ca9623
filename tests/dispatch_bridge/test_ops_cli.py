"""Operator commands against the running services: why, queue, sla, tools."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from dispatch_bridge._ops import Endpoints, OpsError, queue, sla, tools, why
from testkit.api import COMPLETE_TICKET, WINDOW, FakeClock

from .conftest import Bridge, operator_endpoints

CLI = Path(sys.executable).with_name("dispatch-bridge")


def _api_env(ends: Endpoints, data_dir: Path, api_url: str | None = None) -> dict[str, str]:
    """The environment of an operator who knows dispatch-api only (no DISPATCH_* inherited,
    no dev-credentials.json in `data_dir` to fall back on)."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")},
        "DISPATCH_DATA_DIR": str(data_dir),
        "DISPATCH_API_URL": api_url or ends.api_url,
        "DISPATCH_API_TOKEN": ends.api_token,
    }


async def _rb2_ticket(bridge: Bridge) -> str:
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    tid: str = created.body["result"]["ticket"]["id"]
    await bridge.invoke("ticket.schedule", {"ticket_id": tid, **WINDOW})
    await bridge.invoke("ticket.dispatch", {"ticket_id": tid})
    await bridge.invoke("tech.arrive", {"ticket_id": tid}, as_="technician")
    await bridge.invoke("tech.complete", {"ticket_id": tid}, as_="technician")
    await bridge.invoke(
        "evidence.attach",
        {
            "ticket_id": tid,
            "kind": "photo",
            "tag": "before",
            "content_type": "image/png",
            "content_base64": "aGk=",
        },
        as_="technician",
    )
    return tid


async def test_why_tells_the_timeline_with_actors_reasons_evidence_and_ids(
    bridge: Bridge,
) -> None:
    tid = await _rb2_ticket(bridge)

    text = await why(operator_endpoints(bridge), tid, as_json=False)
    events = orjson.loads(await why(operator_endpoints(bridge), tid, as_json=True))

    lines = text.splitlines()
    assert lines[0].split()[:5] == ["seq", "at", "event", "state", "actor"]
    rejected = next(line for line in lines if "completion_rejected" in line)
    assert "agent:tech-1 (technician)" in rejected
    assert "tech.complete" in rejected
    assert "missing photo:before, photo:after, signature:customer" in rejected
    attached = next(line for line in lines if "evidence_attached" in line)
    assert "photo:before" in attached
    assert [e["type"] for e in events][-2:] == ["completion_rejected", "evidence_attached"]
    assert all(e["request_id"] in text and e["trace_id"] in text for e in events)


async def test_queue_and_sla_show_waiting_time_and_time_left(
    bridge: Bridge, clock: FakeClock
) -> None:
    created = await bridge.invoke("ticket.create", {**COMPLETE_TICKET, "priority": "P1"})
    tid = created.body["result"]["ticket"]["id"]
    clock.advance(hours=2, minutes=5)

    rows = orjson.loads(
        await queue(operator_endpoints(bridge), ["READY_TO_SCHEDULE"], as_json=True)
    )
    text = await queue(operator_endpoints(bridge), ["READY_TO_SCHEDULE"], as_json=False)
    late = orjson.loads(await sla(operator_endpoints(bridge), as_json=True))
    sla_text = await sla(operator_endpoints(bridge), as_json=False)

    assert [r["id"] for r in rows] == [tid]
    assert f"{tid}  READY_TO_SCHEDULE  P1    2h05m" in text
    assert [t["id"] for t in late["breached"]] == [tid]
    assert f"breached  {tid}" in sla_text
    assert "-5m00s" in sla_text


async def test_why_queue_and_sla_are_bounded_and_say_when_they_were_cut(
    bridge: Bridge, clock: FakeClock
) -> None:
    """A ticket's whole history or the whole queue is not paged without end: each listing
    stops at its bound and says so, and a listing within it says nothing."""
    tids = []
    for _ in range(3):
        created = await bridge.invoke("ticket.create", {**COMPLETE_TICKET, "priority": "P1"})
        tids.append(created.body["result"]["ticket"]["id"])
    story = await _rb2_ticket(bridge)  # six events
    clock.advance(hours=3)
    ends = operator_endpoints(bridge)

    cut_story = await why(ends, story, as_json=False, most=4)
    whole_story = await why(ends, story, as_json=False, most=6)
    cut_json = orjson.loads(await why(ends, story, as_json=True, most=4))
    cut_queue = await queue(ends, ["READY_TO_SCHEDULE"], as_json=False, most=2)
    whole_queue = await queue(ends, ["READY_TO_SCHEDULE"], as_json=False, most=3)
    cut_sla = await sla(ends, as_json=False, most=2)

    assert cut_story.endswith("(the first 4 events shown; there are more)")
    assert [e["seq"] for e in cut_json] == [1, 2, 3, 4]
    assert "there are more" not in whole_story
    assert "evidence_attached" in whole_story
    assert "evidence_attached" not in cut_story
    assert cut_queue.endswith("(the first 2 tickets shown; there are more)")
    assert sum(t in cut_queue for t in tids) == 2
    assert "there are more" not in whole_queue
    assert all(t in whole_queue for t in tids)
    assert cut_sla.endswith("(the first 2 breached shown; there may be more)")


async def test_tools_shows_failure_ratio_latency_and_stuck_calls(bridge: Bridge) -> None:
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    tid = created.body["result"]["ticket"]["id"]
    await bridge.invoke("tech.arrive", {"ticket_id": tid})  # invalid_transition
    cancel = {"ticket_id": tid, "reason": "duplicate"}
    held_for_approval = await bridge.invoke("ticket.cancel", cancel, as_="dispatcher")
    assert held_for_approval.status == 202, held_for_approval.body
    bridge.proxy.hold()
    held = asyncio.create_task(bridge.invoke("ticket.get", {"ticket_id": tid}))
    await asyncio.wait_for(bridge.proxy.holding.wait(), 5)

    report = orjson.loads(await tools(operator_endpoints(bridge), as_json=True, stuck_after_s=0))
    bridge.proxy.release()
    await held

    by_tool = {t["tool"]: t for t in report["tools"]}
    assert by_tool["tech.arrive"]["failure_ratio"] == 1.0
    assert by_tool["tech.arrive"]["failures_by_code"] == {"invalid_transition": 1}
    assert by_tool["ticket.create"]["p50_ms"] > 0
    # Waiting for a person is the policy working, not a failure.
    assert (by_tool["ticket.cancel"]["calls"], by_tool["ticket.cancel"]["failure_ratio"]) == (1, 0)
    assert [c["tool"] for c in report["stuck"]] == ["ticket.get"]


async def test_a_service_that_is_down_or_a_bad_id_is_one_clear_line(bridge: Bridge) -> None:
    down = Endpoints("http://127.0.0.1:9", "t", "http://127.0.0.1:9", "k")

    with pytest.raises(OpsError, match=r"cannot reach http://127\.0\.0\.1:9"):
        await why(down, "x", as_json=False)
    with pytest.raises(OpsError, match="400 ticket_id must be a UUID"):
        await why(operator_endpoints(bridge), "not-a-uuid", as_json=False)


async def test_the_cli_prints_json_and_exits_1_with_one_line_on_failure(
    bridge: Bridge, tmp_path: Path
) -> None:
    ends = operator_endpoints(bridge)
    env = {
        **_api_env(ends, tmp_path),
        "DISPATCH_BRIDGE_URL": ends.bridge_url,
        "DISPATCH_AGENT_KEY": ends.agent_key,
    }
    await bridge.invoke("ticket.create", COMPLETE_TICKET)

    ok = await asyncio.to_thread(
        subprocess.run, [str(CLI), "queue", "--json"], env=env, capture_output=True, text=True
    )
    env["DISPATCH_API_URL"] = "http://127.0.0.1:9"
    failed = await asyncio.to_thread(
        subprocess.run, [str(CLI), "sla"], env=env, capture_output=True, text=True
    )

    assert ok.returncode == 0, ok.stderr
    assert len(json.loads(ok.stdout)) == 1
    assert failed.returncode == 1
    assert failed.stderr.count("\n") == 1
    assert failed.stderr.startswith("dispatch-bridge sla: sla: cannot reach")


async def test_why_queue_and_sla_need_only_dispatch_api_and_a_trailing_slash_is_harmless(
    bridge: Bridge, tmp_path: Path
) -> None:
    ends = operator_endpoints(bridge)
    env = _api_env(ends, tmp_path, api_url=ends.api_url + "/")  # no bridge URL or agent key
    await bridge.invoke("ticket.create", COMPLETE_TICKET)

    runs = {
        command: await asyncio.to_thread(
            subprocess.run, [str(CLI), command, "--json"], env=env, capture_output=True, text=True
        )
        for command in ("queue", "sla", "tools")
    }

    assert runs["queue"].returncode == 0, runs["queue"].stderr
    assert len(json.loads(runs["queue"].stdout)) == 1
    assert runs["sla"].returncode == 0, runs["sla"].stderr
    assert runs["tools"].returncode == 1  # it reads the bridge, so it asks for it by name
    assert "DISPATCH_BRIDGE_URL, DISPATCH_AGENT_KEY" in runs["tools"].stderr


async def test_an_operator_command_piped_into_a_reader_that_stops_early_ends_quietly(
    bridge: Bridge, tmp_path: Path
) -> None:
    env = _api_env(operator_endpoints(bridge), tmp_path)
    for _ in range(3):
        await bridge.invoke("ticket.create", COMPLETE_TICKET)

    def piped() -> subprocess.CompletedProcess[bytes]:
        reader, writer = os.pipe()
        os.close(reader)  # like `| head -0`: nobody reads
        try:
            return subprocess.run(
                [str(CLI), "queue"], env=env, stdout=writer, stderr=subprocess.PIPE, check=False
            )
        finally:
            os.close(writer)

    done = await asyncio.to_thread(piped)

    assert b"Traceback" not in done.stderr, done.stderr.decode()
    assert done.stderr == b""
