"""The README's "Answering the five questions", demonstrated against the running product."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from testkit.api import COMPLETE_TICKET, WINDOW, parsed_logs

from .conftest import Bridge

README = Path(__file__).resolve().parents[2] / "README.md"
NOT_METRICS = frozenset({"histogram_quantile", "group_left"})


def _readme_promql() -> list[str]:
    section = README.read_text().split("## Answering the five questions", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```promql\n(.*?)```", section, re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


async def _exposed(bridge: Bridge) -> set[str]:
    names: set[str] = set()
    for text in (
        (await bridge.request("GET", "/metrics", as_="")).raw.decode(),
        (await bridge.api.request("GET", "/metrics", as_="")).raw.decode(),
    ):
        for family in text_string_to_metric_families(text):
            names.update(sample.name for sample in family.samples)
    return names


async def _ticket_with_a_rejected_completion(bridge: Bridge) -> tuple[str, str]:
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    tid: str = created.body["result"]["ticket"]["id"]
    await bridge.invoke("ticket.schedule", {"ticket_id": tid, **WINDOW})
    await bridge.invoke("ticket.dispatch", {"ticket_id": tid})
    await bridge.invoke("tech.arrive", {"ticket_id": tid}, as_="technician")
    refused = await bridge.invoke("tech.complete", {"ticket_id": tid}, as_="technician")
    return tid, refused.body["request_id"]


async def test_q1_the_timeline_says_why_the_ticket_changed_state(
    bridge: Bridge, log_lines: list[bytes]
) -> None:
    tid, _ = await _ticket_with_a_rejected_completion(bridge)

    events = await bridge.api.timeline(tid)
    ticket_lines = [
        line
        for line in parsed_logs(log_lines)
        if line["ticket_id"] == tid and line["event"] == "http_request"
    ]

    assert [(e["type"], e["from_state"], e["to_state"]) for e in events][-2:] == [
        ("arrived", "DISPATCHED", "ON_SITE"),
        ("completion_rejected", "ON_SITE", "ON_SITE"),
    ]
    assert [m["tag"] for m in events[-1]["details"]["missing_evidence"]] == [
        "before",
        "after",
        "customer",
    ]
    assert {line["service"] for line in ticket_lines} == {"bridge", "dispatch-api"}


async def test_q2_the_timeline_and_the_logs_say_who_initiated_it(
    bridge: Bridge, log_lines: list[bytes]
) -> None:
    tid, request_id = await _ticket_with_a_rejected_completion(bridge)

    rejected = (await bridge.api.timeline(tid))[-1]
    same_call = [line for line in parsed_logs(log_lines) if line["request_id"] == request_id]

    assert (rejected["actor_type"], rejected["actor_id"], rejected["role"]) == (
        "agent",
        "tech-1",
        "technician",
    )
    assert rejected["tool_name"] == "tech.complete"
    assert rejected["request_id"] == request_id
    assert {(line["service"], line["event"]) for line in same_call} == {
        ("bridge", "http_request"),
        ("bridge", "upstream_attempt"),
        ("dispatch-api", "http_request"),
    }
    assert {line["trace_id"] for line in same_call} == {rejected["trace_id"]}
    assert {line["actor_id"] for line in same_call} == {"tech-1"}


async def test_q3_the_evidence_listing_says_what_was_attached_by_whom(bridge: Bridge) -> None:
    tid, _ = await _ticket_with_a_rejected_completion(bridge)
    await bridge.invoke(
        "evidence.attach",
        {
            "ticket_id": tid,
            "kind": "photo",
            "tag": "before",
            "content_type": "image/png",
            "content_base64": "aGVsbG8=",
        },
        as_="technician",
    )

    listing = await bridge.api.request("GET", f"/v1/tickets/{tid}/evidence")

    [item] = listing.body["items"]
    assert (item["kind"], item["tag"], item["size_bytes"]) == ("photo", "before", 5)
    assert item["sha256"] == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert item["captured_by"] == {
        "actor_type": "agent",
        "actor_id": "tech-1",
        "role": "technician",
    }


async def test_q4_and_q5_the_readme_promql_parses_and_names_only_exposed_metrics(
    bridge: Bridge, tmp_path: Path
) -> None:
    bridge.proxy.drop_responses = 1  # one retry, so the retry series exists
    await bridge.invoke("ticket.create", COMPLETE_TICKET)
    await bridge.invoke("ticket.teleport", {})
    queries = _readme_promql()
    rules = {
        "groups": [
            {
                "name": "readme",
                "rules": [{"record": f"readme:q{i}", "expr": q} for i, q in enumerate(queries)],
            }
        ]
    }
    path = tmp_path / "readme-rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML

    checked = await asyncio.to_thread(
        subprocess.run,
        ["promtool", "check", "rules", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    exposed = await _exposed(bridge)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert len(queries) >= 8
    for query in queries:
        names = {
            token
            for token in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", query)
            if "_" in token and token not in NOT_METRICS
        }
        assert names, query
        assert names <= exposed, (query, names - exposed)


async def test_q5_failing_and_stuck_tool_calls_show_in_metrics_and_in_flight(
    bridge: Bridge,
) -> None:
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    tid = created.body["result"]["ticket"]["id"]
    await bridge.invoke("tech.arrive", {"ticket_id": tid})  # invalid_transition
    bridge.proxy.hold()
    stuck = asyncio.create_task(bridge.invoke("ticket.get", {"ticket_id": tid}))
    await asyncio.wait_for(bridge.proxy.holding.wait(), 5)

    inflight = await bridge.request("GET", "/v1/ops/inflight")
    exposition = (await bridge.request("GET", "/metrics", as_="")).raw.decode()
    bridge.proxy.release()
    await stuck

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
    }
    assert (
        samples[
            ("tool_invocations_total", (("code", "invalid_transition"), ("tool", "tech.arrive")))
        ]
        == 1
    )
    assert samples[("tool_calls_in_flight", (("tool", "ticket.get"),))] == 1
    [call] = inflight.body["calls"]
    assert (call["tool"], call["ticket_id"]) == ("ticket.get", tid)
