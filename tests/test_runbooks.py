"""The operator runbooks in docs/runbooks/, carried out against the real services.

Each test stages its runbook's situation through the bridge (FakeClock moved to age tickets,
the SLA sweep run on demand) and then follows the runbook step by step. The commands are read
from the markdown itself, with the shell variables filled in: tool-call bodies, SQL and
dispatch-api paths run as written, `dispatch-bridge` commands are parsed by the CLI's own
parser and run through `dispatch_bridge._ops`; `jq` filters are mirrored in Python next to them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shlex
import subprocess
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dispatch_api.settings import ApiSettings
from dispatch_api.store import connect
from dispatch_api.web._keys import APPROVALS
from dispatch_bridge._approvals_cli import DecisionRefused, approvals, decide
from dispatch_bridge._ops import queue, sla, tools, why
from dispatch_bridge.cli import _parser
from testkit.api import COMPLETE_TICKET, FakeClock, Reply, parsed_logs
from testkit.api import window as window_from
from testkit.approvals import without_approvals
from tests.bridge import conftest as bridge_harness
from tests.bridge.conftest import Bridge
from tests.dispatch_bridge.conftest import operator_endpoints
from tools import ToolError, catalog

RUNBOOKS = Path(__file__).resolve().parents[1] / "docs" / "runbooks"
FILES = {
    "RB1": "RB1-scheduling-stuck.md",
    "RB2": "RB2-completion-rejected.md",
    "RB3": "RB3-idempotency-conflicts.md",
    "RB4": "RB4-sla-breach.md",
    "RB5": "RB5-approvals-waiting.md",
}
SECTIONS = ("## When it fires", "## Meaning", "## Impact", "## Diagnosis", "## Mitigation")
PROMQL_WORDS = frozenset(
    {"sum", "max", "rate", "increase", "by", "without", "and", "or", "unless", "bool"}
    | {"histogram_quantile"}
)
TOOLS = {t.name: t for t in catalog()}

# The bridge harness (real bridge -> fault proxy -> real dispatch-api), as in tests/bridge/.
bridge = bridge_harness.bridge
bridge_overrides = bridge_harness.bridge_overrides
bridge_retry = bridge_harness.bridge_retry

# --- the runbooks as data ---------------------------------------------------------------


def fill(template: str, values: Mapping[str, str]) -> str:
    """Substitute `$NAME` shell variables (longest names first); none may be left over."""
    for name in sorted(values, key=len, reverse=True):
        template = template.replace("$" + name, values[name])
    assert "$" not in template, f"unfilled shell variable in {template!r}"
    return template


@dataclass(frozen=True)
class Runbook:
    name: str
    text: str

    @classmethod
    def load(cls, name: str) -> Runbook:
        return cls(name, (RUNBOOKS / FILES[name]).read_text())

    def tool_calls(self, tool: str) -> list[str]:
        """Bodies (heredocs) of the `POST $BRIDGE/v1/tools/<tool>/invoke` calls, in order."""
        pattern = rf'"\$BRIDGE/v1/tools/{re.escape(tool)}/invoke".*?<<EOF[^\n]*\n(.*?)\nEOF'
        return [str(body) for body in re.findall(pattern, self.text, re.S)]

    def all_tool_calls(self) -> list[tuple[str, str]]:
        pattern = r'"\$BRIDGE/v1/tools/([\w.]+)/invoke".*?<<EOF[^\n]*\n(.*?)\nEOF'
        return [(str(tool), str(body)) for tool, body in re.findall(pattern, self.text, re.S)]

    def sql(self, containing: str) -> str:
        """The one `psql "$DISPATCH_DATABASE_URL" -c "..."` statement containing `containing`."""
        statements: list[str] = re.findall(
            r'psql "\$DISPATCH_DATABASE_URL" -c "([^"]*)"', self.text
        )
        found = [s for s in statements if containing in s]
        assert len(found) == 1, (containing, found)
        return found[0]

    def api_path(self, starting: str) -> str:
        """The one `curl -sS "$API/v1/..."` path starting with `starting`."""
        paths: list[str] = re.findall(r'curl -sS "\$API(/v1/[^"]*)"', self.text)
        # An exact path wins over longer ones it is a prefix of ($TICKET vs $TICKET/evidence).
        found = [starting] if starting in paths else [p for p in paths if p.startswith(starting)]
        assert len(found) == 1, (starting, found)
        return found[0]

    def operator_commands(self) -> list[str]:
        found = re.findall(r"^(dispatch-bridge [^|\n\\]*?)\s*(?:\\|\||$)", self.text, re.M)
        return [str(command) for command in found]

    def promql(self) -> list[str]:
        blocks = re.findall(r"```promql\n(.*?)```", self.text, re.S)
        return [line for block in blocks for line in block.splitlines() if line.strip()]


async def operator(rb: Runbook, bridge: Bridge, command: str, **values: str) -> str:
    """Run a `dispatch-bridge` command as the runbook writes it, through `dispatch_bridge._ops`."""
    assert command in rb.text, f"{rb.name} does not say {command!r}"
    args = _parser().parse_args(shlex.split(fill(command, values))[1:])
    ends = operator_endpoints(bridge)
    if args.command == "why":
        return await why(ends, args.ticket_id, args.json)
    if args.command == "queue":
        return await queue(ends, args.state or [], args.json)
    if args.command == "sla":
        return await sla(ends, args.json)
    if args.command == "approvals":
        return await approvals(ends, args.status, args.json)
    if args.command in ("approve", "deny"):
        return await decide(ends, args.approval_id, args.command, args.reason, args.json)
    assert args.command == "tools"
    return await tools(ends, args.json)


async def tool_call(
    rb: Runbook, bridge: Bridge, tool: str, *, nth: int = 0, as_: str = "supervisor", **values: str
) -> Reply:
    """Invoke the runbook's `nth` call of `tool` with its body as written (the operator's key
    is a supervisor agent key)."""
    body = orjson.loads(fill(rb.tool_calls(tool)[nth], values))
    assert set(body) <= {"arguments", "tool_call_id"}, body
    return await bridge.invoke(
        tool, body["arguments"], as_=as_, tool_call_id=body.get("tool_call_id")
    )


async def api_get(rb: Runbook, bridge: Bridge, starting: str, **values: str) -> Any:
    reply = await bridge.api.request("GET", fill(rb.api_path(starting), values))
    assert reply.status == 200, reply.body
    return reply.body


async def psql(rb: Runbook, bridge: Bridge, containing: str, **values: str) -> list[dict[str, Any]]:
    conn = await connect(bridge.api.database_url)
    try:
        rows = await conn.fetch(fill(rb.sql(containing), values))
    finally:
        await conn.close()
    return [dict(r) for r in rows]


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(bridge: Bridge) -> Samples:
    """Every sample both services expose now, by name and labels."""
    samples: Samples = {}
    for reply in (
        await bridge.request("GET", "/metrics", as_=""),
        await bridge.api.request("GET", "/metrics", as_=""),
    ):
        for family in text_string_to_metric_families(reply.raw.decode()):
            for s in family.samples:
                samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def table(text: str) -> dict[str, list[str]]:
    """An operator table's rows by their first column (columns are 2+ spaces apart)."""
    rows = [re.split(r"\s{2,}", line.strip()) for line in text.splitlines()[1:] if line.strip()]
    return {row[0]: row for row in rows}


async def create(bridge: Bridge, as_: str = "dispatcher", **fields: Any) -> str:
    arguments = {k: v for k, v in {**COMPLETE_TICKET, **fields}.items() if v is not None}
    reply = await bridge.invoke("ticket.create", arguments, as_=as_)
    assert reply.body["ok"], reply.body
    tid: str = reply.body["result"]["ticket"]["id"]
    return tid


async def act(bridge: Bridge, tool: str, tid: str, as_: str = "dispatcher", **args: Any) -> Reply:
    reply = await bridge.invoke(tool, {"ticket_id": tid, **args}, as_=as_)
    assert reply.body["ok"], reply.body
    return reply


#: The services run on the wall clock here (below): a window tomorrow is in their future.
WINDOW = window_from(
    first=datetime.now(UTC).replace(hour=13, minute=0, second=0, microsecond=0) + timedelta(days=1)
)


@pytest.fixture
def shipped_approvals() -> bool:
    """RB1-RB4 are not about approvals: RB1's emergency dispatch runs straight through here
    (under the shipped policy a supervisor approves it first; issue 18). RB5 and the PromQL
    check ask for the shipped policy (`parametrize("shipped_approvals", [True])`)."""
    return False


@pytest.fixture
def api_settings(api_settings: ApiSettings, shipped_approvals: bool) -> ApiSettings:
    return api_settings if shipped_approvals else without_approvals(api_settings)


@pytest.fixture
def clock() -> FakeClock:
    """Real wall-clock time to start with, so the runbooks' `now() - interval` SQL windows
    see what the services record."""
    return FakeClock(datetime.now(UTC).replace(microsecond=0))


# --- RB1 ----------------------------------------------------------------------------------


# RB1 stages its own technician directory: none seeded.
@pytest.mark.parametrize("test_technicians", [()])
async def test_rb1_tickets_stuck_in_ready_to_schedule(
    bridge: Bridge, clock: FakeClock, test_technicians: tuple[str, ...]
) -> None:
    rb = Runbook.load("RB1")
    # The only water_leak technician is off duty; another is active but for lockouts only.
    for body in (
        {"id": "tech-1", "name": "Tech One", "skills": ["water_leak"], "active": False},
        {"id": "tech-9", "name": "Tech Nine", "skills": ["lockout"]},
    ):
        added = await bridge.api.request("POST", "/v1/technicians", json=body)
        assert added.status == 201, added.body
    p2 = await create(bridge)
    p1 = await create(bridge, priority="P1")
    new = await create(bridge, contact_phone=None)
    skipped = await bridge.invoke("ticket.dispatch", {"ticket_id": p2}, as_="dispatcher")
    assert skipped.body["error"]["code"] == "invalid_transition"
    clock.advance(minutes=45)

    # 1. find them
    rows = table(await operator(rb, bridge, "dispatch-bridge queue --state READY_TO_SCHEDULE"))
    assert set(rows) == {p2, p1}
    # ticket, state, prio, in state, response left, resolution left, missing, last change
    assert rows[p1][1:] == [
        "READY_TO_SCHEDULE",
        "P1",
        "45m00s",
        "1h15m",
        "7h15m",
        "-",
        "created by agent-disp",
    ]
    assert rows[p2][3:5] == ["45m00s", "3h15m"]
    assert rows[p2][-1] == "action_rejected by agent-disp"
    page = await api_get(rb, bridge, "/v1/tickets?state=READY_TO_SCHEDULE&priority=P1")
    # jq -r '.items[] | [.id, .time_in_state_s, .response_remaining_s, .last_event.type,
    #   .incident_type, .matching_technicians]'
    assert [
        [
            t["id"],
            t["time_in_state_s"],
            t["response_remaining_s"],
            t["last_event"]["type"],
            t["incident_type"],
            t["matching_technicians"],
        ]
        for t in page["items"]
    ] == [[p1, 2700.0, 4500.0, "created", "water_leak", 0]]
    metrics = await scrape(bridge)
    oldest = sample(metrics, "tickets_oldest_in_state_seconds", state="READY_TO_SCHEDULE")
    assert oldest == 2700.0  # > 1800: the alert's condition holds
    assert sample(metrics, "tickets_in_state", state="READY_TO_SCHEDULE") == 2

    # 2. see why: missing fields (in NEW), the last change, the story, the scheduler's calls
    # nobody can take it: who has the skill, active or not
    skilled = await api_get(rb, bridge, "/v1/technicians?skill=", SKILL="water_leak")
    # jq -r '.items[] | [.id, .name, .active, .region]'
    assert [[t["id"], t["name"], t["active"], t["region"]] for t in skilled["items"]] == [
        ["tech-1", "Tech One", False, None]
    ]
    waiting = table(await operator(rb, bridge, "dispatch-bridge queue --state NEW"))
    assert waiting[new][1] == "NEW"
    assert waiting[new][6] == "contact"
    story = await operator(rb, bridge, 'dispatch-bridge why "$TICKET"', TICKET=p2)
    [refused_line] = [line for line in story.splitlines() if "action_rejected" in line]
    assert "agent:agent-disp (dispatcher)" in refused_line
    assert "ticket.dispatch" in refused_line
    events = orjson.loads(
        await operator(rb, bridge, 'dispatch-bridge why "$TICKET" --json', TICKET=p2)
    )
    # jq -c '.[] | select(.type == "action_rejected") | {seq, actor_id, tool_name, code, allowed}'
    refusals = [
        (e["actor_id"], e["tool_name"], e["details"]["code"], e["details"]["allowed_actions"])
        for e in events
        if e["type"] == "action_rejected"
    ]
    assert len(refusals) == 1
    assert refusals[0][:3] == ("agent-disp", "ticket.dispatch", "invalid_transition")
    assert "schedule" in refusals[0][3]
    by_tool = table(await operator(rb, bridge, "dispatch-bridge tools"))
    assert by_tool["ticket.dispatch"][1:4] == ["1", "100.0%", "invalid_transition=1"]
    # sum by (code) (rate(tool_invocations_total{tool="ticket.schedule"}[15m])): no series —
    # nobody is calling ticket.schedule at all
    assert not [key for key in metrics if ("tool", "ticket.schedule") in key[1]]

    # 3. record a contact attempt; fill in the NEW ticket; schedule
    followed = await tool_call(rb, bridge, "customer.follow_up", TICKET=p2)
    result = followed.body["result"]
    assert result["ticket"]["state"] == "READY_TO_SCHEDULE"
    assert result["event"]["type"] == "contact_attempt"
    assert result["event"]["details"] == {"channel": "phone", "outcome": "left_message"}
    rows = table(await operator(rb, bridge, "dispatch-bridge queue --state READY_TO_SCHEDULE"))
    assert rows[p2][3] == "45m00s"  # the time in state does not reset
    assert rows[p2][-1] == "contact_attempt by agent-sup"
    updated = await tool_call(rb, bridge, "ticket.update", TICKET=new, PHONE="+44 20 7946 0001")
    assert updated.body["result"]["ticket"]["state"] == "READY_TO_SCHEDULE"
    assert updated.body["result"]["ticket"]["missing_fields"] == []
    # a technician back on duty, then who is free in the window
    [patch] = re.findall(
        r'curl -sS -X PATCH "\$API(/v1/technicians/\$TECH)".*?--data \'([^\']*)\'', rb.text, re.S
    )
    activated = await bridge.api.request(
        "PATCH", fill(patch[0], {"TECH": "tech-1"}), json=orjson.loads(patch[1])
    )
    assert activated.status == 200, activated.body
    assert activated.body["technician"]["active"] is True
    page = await api_get(rb, bridge, "/v1/tickets?state=READY_TO_SCHEDULE&priority=P1")
    assert [t["matching_technicians"] for t in page["items"]] == [1]
    start, end = WINDOW["window_start"], WINDOW["window_end"]
    free = await tool_call(
        rb, bridge, "technician.list", SKILL="water_leak", WINDOW_START=start, WINDOW_END=end
    )
    # jq -r '.result.items[] | [.id, .name, .region]'
    assert [[t["id"], t["name"], t["region"]] for t in free.body["result"]["items"]] == [
        ["tech-1", "Tech One", None]
    ]
    scheduled = await tool_call(
        rb,
        bridge,
        "ticket.schedule",
        TICKET=p2,
        TECH="tech-1",
        WINDOW_START=WINDOW["window_start"],
        WINDOW_END=WINDOW["window_end"],
    )
    assert scheduled.body["result"]["ticket"]["state"] == "SCHEDULED"
    assert scheduled.body["result"]["ticket"]["assignment"]["technician_id"] == "tech-1"

    # 4. P1: the emergency bypass, refused for a non-P1 or without a reason
    not_p1 = await tool_call(rb, bridge, "ticket.dispatch", TICKET=new, TECH="tech-1")
    assert not_p1.body["error"]["code"] == "invalid_transition"
    body = orjson.loads(fill(rb.tool_calls("ticket.dispatch")[0], {"TICKET": p1, "TECH": "tech-1"}))
    no_reason = await bridge.invoke(
        "ticket.dispatch", {k: v for k, v in body["arguments"].items() if k != "bypass_reason"}
    )
    assert no_reason.body["error"]["code"] == "invalid_arguments"
    assert no_reason.body["error"]["details"]["upstream_code"] == "bypass_reason_required"
    bypassed = await tool_call(rb, bridge, "ticket.dispatch", TICKET=p1, TECH="tech-1")
    event = bypassed.body["result"]["event"]
    assert bypassed.body["result"]["ticket"]["state"] == "DISPATCHED"
    reason = body["arguments"]["bypass_reason"]
    assert event["details"] == {"bypass": True, "bypass_reason": reason, "technician_id": "tech-1"}
    # The same call on a SCHEDULED ticket is an ordinary dispatch; the reason is not recorded.
    ordinary = await tool_call(rb, bridge, "ticket.dispatch", TICKET=p2, TECH="tech-1")
    assert ordinary.body["result"]["ticket"]["state"] == "DISPATCHED"
    assert ordinary.body["result"]["event"]["details"] == {
        "bypass": False,
        "technician_id": "tech-1",
    }

    # ... and its audit: the timeline, the SQL, the transition counter
    story = await operator(rb, bridge, 'dispatch-bridge why "$TICKET"', TICKET=p1)
    [dispatched_line] = [line for line in story.splitlines() if " dispatched " in line]
    assert "READY_TO_SCHEDULE -> DISPATCHED" in dispatched_line
    assert reason in dispatched_line
    bypasses = await psql(rb, bridge, "(details->>'bypass')::boolean")
    assert [
        (str(r["ticket_id"]), r["actor_id"], r["tool_name"], r["technician"], r["bypass_reason"])
        for r in bypasses
    ] == [(p1, "agent-sup", "ticket.dispatch", "tech-1", reason)]
    assert bypasses[0]["request_id"] == bypassed.body["request_id"]
    refused = await psql(rb, bridge, "type = 'action_rejected'")
    assert {(str(r["ticket_id"]), r["actor_id"], r["code"]) for r in refused} == {
        (p2, "agent-disp", "invalid_transition"),
        (new, "agent-sup", "invalid_transition"),
        (p1, "agent-sup", "bypass_reason_required"),
    }
    metrics = await scrape(bridge)
    labels = {"from": "READY_TO_SCHEDULE", "to": "DISPATCHED"}
    assert sample(metrics, "state_transitions_total", **labels) == 1

    # done: neither is waiting to be scheduled any more
    rows = table(await operator(rb, bridge, "dispatch-bridge queue --state READY_TO_SCHEDULE"))
    assert set(rows) == {new}


# --- RB2 ----------------------------------------------------------------------------------


async def test_rb2_completion_rejected_until_the_evidence_is_attached(
    bridge: Bridge, log_lines: list[bytes]
) -> None:
    rb = Runbook.load("RB2")
    tid = await create(bridge)
    await act(bridge, "ticket.schedule", tid, **WINDOW)
    await act(bridge, "ticket.dispatch", tid)
    await act(bridge, "tech.arrive", tid, as_="technician")
    before_photo = {"kind": "photo", "tag": "before", "content_type": "image/jpeg"}
    await act(
        bridge, "evidence.attach", tid, as_="technician", **before_photo, content_base64="aGk="
    )
    complete = {"ticket_id": tid}
    refused = await bridge.invoke("tech.complete", complete, as_="technician", tool_call_id="c-3")
    resent = await bridge.invoke("tech.complete", complete, as_="technician", tool_call_id="c-3")
    request_id = refused.body["request_id"]
    assert refused.body["error"]["code"] == resent.body["error"]["code"] == "evidence_missing"
    assert resent.body["request_id"] == request_id

    # 1. how many, through which tool, which tickets
    metrics = await scrape(bridge)
    assert sample(metrics, "dispatch_api_errors_total", type="evidence_missing") == 2
    complete_refused = {"tool": "tech.complete", "code": "evidence_missing"}
    assert sample(metrics, "tool_invocations_total", **complete_refused) == 2
    assert sample(metrics, "idempotency_replay_total") == 1  # the re-sent call was replayed
    [still_refused] = await psql(rb, bridge, "DISTINCT ON (ticket_id)")
    assert str(still_refused["ticket_id"]) == tid
    assert (still_refused["actor_id"], still_refused["tool_name"]) == ("tech-1", "tech.complete")
    assert still_refused["request_id"] == request_id
    assert [(m["kind"], m["tag"]) for m in still_refused["missing"]] == [
        ("photo", "after"),
        ("signature", "customer"),
    ]

    # 2. the missing list, and the agent re-sending its refused call
    story = await operator(rb, bridge, 'dispatch-bridge why "$TICKET"', TICKET=tid)
    [refused_line] = [line for line in story.splitlines() if "completion_rejected" in line]
    assert "missing photo:after, signature:customer" in refused_line
    assert request_id in refused_line
    assert story.count("completion_rejected") == 1  # the replay appended nothing
    # jq -c 'select(.service == "bridge" and .event == "http_request" and .tool_name ==
    #   "tech.complete" and .ticket_id == $TICKET) | {ts, actor_id, request_id, ...}'
    completions = [
        (line["actor_id"], line["request_id"], line["status_code"], line["error_code"])
        for line in parsed_logs(log_lines)
        if line["service"] == "bridge"
        and line["event"] == "http_request"
        and line["tool_name"] == "tech.complete"
        and line["ticket_id"] == tid
    ]
    assert completions == [("tech-1", request_id, 422, "evidence_missing")] * 2

    # 3. what is attached against what is required
    summary = (await api_get(rb, bridge, "/v1/tickets/$TICKET", TICKET=tid))["evidence_summary"]
    assert (summary["total"], summary["by_kind_and_tag"]) == (
        1,
        [{"kind": "photo", "tag": "before", "count": 1}],
    )
    attached = await api_get(rb, bridge, "/v1/tickets/$TICKET/evidence", TICKET=tid)
    assert [(e["kind"], e["tag"], e["captured_by"]["actor_id"]) for e in attached["items"]] == [
        ("photo", "before", "tech-1")
    ]
    assert attached["next_cursor"] is None
    templates = await api_get(rb, bridge, "/v1/templates")
    [leak] = [t for t in templates["templates"] if t["name"] == "water_leak"]
    assert [(r["kind"], r["tag"]) for r in leak["requirements"]] == [
        ("photo", "before"),
        ("photo", "after"),
        ("signature", "customer"),
    ]

    # 4. attach what is missing
    files = {
        "PHOTO_B64": base64.b64encode(b"after photo").decode(),
        "SIGNATURE_B64": base64.b64encode(b"signature").decode(),
    }
    for nth in range(2):
        attach = await tool_call(rb, bridge, "evidence.attach", nth=nth, TICKET=tid, **files)
        assert attach.body["ok"], attach.body
        assert attach.body["result"]["event"]["type"] == "evidence_attached"
        assert attach.body["result"]["evidence"]["id"]

    # 5. the old call still answers the old refusal; a new call completes
    old = await bridge.invoke("tech.complete", complete, as_="technician", tool_call_id="c-3")
    assert old.body["error"]["code"] == "evidence_missing"
    assert old.body["request_id"] == request_id
    completed = await tool_call(rb, bridge, "tech.complete", TICKET=tid)
    assert completed.body["result"]["ticket"]["state"] == "COMPLETED"
    assert completed.body["request_id"] != request_id

    # done
    events = orjson.loads(await why(operator_endpoints(bridge), tid, as_json=True))
    assert (events[-1]["type"], events[-1]["from_state"], events[-1]["to_state"]) == (
        "completed",
        "ON_SITE",
        "COMPLETED",
    )
    assert await psql(rb, bridge, "DISTINCT ON (ticket_id)") == []


# --- RB3 ----------------------------------------------------------------------------------


async def test_rb3_idempotency_conflicts_name_the_client(
    bridge: Bridge, log_lines: list[bytes]
) -> None:
    rb = Runbook.load("RB3")
    first, second = await create(bridge), await create(bridge)
    # An agent numbering its calls per conversation: "call_1" again, on another ticket.
    contact = {"channel": "phone", "outcome": "reached"}
    kept = await bridge.invoke(
        "customer.follow_up",
        {"ticket_id": first, **contact},
        as_="dispatcher",
        tool_call_id="call_1",
    )
    lost = await bridge.invoke(
        "customer.follow_up",
        {"ticket_id": second, **contact},
        as_="dispatcher",
        tool_call_id="call_1",
    )
    reused_id = kept.body["request_id"]
    assert lost.body["error"]["code"] == "idempotency_conflict"
    first_path = f"/v1/tickets/{first}/contact-attempts"
    assert lost.body["error"]["details"]["original_path"] == first_path
    # A direct dispatch-api client reusing its own key with another body.
    key = str(uuid.uuid4())
    ok = await bridge.api.request("POST", first_path, json=contact, key=key)
    clash = await bridge.api.request(
        "POST", first_path, json={**contact, "outcome": "declined"}, key=key
    )
    assert (ok.status, clash.status) == (200, 422)

    # 1. how many, from which side
    metrics = await scrape(bridge)
    assert sample(metrics, "idempotency_conflict_total") == 2
    conflicts = {"tool": "customer.follow_up", "code": "idempotency_conflict"}
    assert sample(metrics, "tool_invocations_total", **conflicts) == 1  # the other is direct

    # 2. the dispatch-api log lines name the actor
    # jq -c 'select(.service == "dispatch-api" and .error_code == "idempotency_conflict") | {...}'
    fields = ("actor_type", "actor_id", "role", "tool_name", "endpoint", "ticket_id", "request_id")
    refused = [
        {k: line[k] for k in fields}
        for line in parsed_logs(log_lines)
        if line["service"] == "dispatch-api" and line.get("error_code") == "idempotency_conflict"
    ]
    endpoint = "/v1/tickets/{ticket_id}/contact-attempts"
    assert [tuple(r.values()) for r in refused] == [
        ("agent", "agent-disp", "dispatcher", "customer.follow_up", endpoint, second, reused_id),
        # A human's request_id is minted by dispatch-api (the same for every use of its key).
        ("human", "sup-1", "supervisor", None, endpoint, first, ok.headers["X-Request-ID"]),
    ]
    # jq -r '... | [.actor_type, .actor_id, .tool_name // "-"] | @tsv' | sort | uniq -c
    per_actor = Counter((r["actor_type"], r["actor_id"], r["tool_name"] or "-") for r in refused)
    assert per_actor == {
        ("agent", "agent-disp", "customer.follow_up"): 1,
        ("human", "sup-1", "-"): 1,
    }
    # jq -r 'select(.service == "bridge" and .event == "http_request" and .actor_id == $AGENT
    #   and .request_id != null) | .request_id' | sort | uniq -c | awk '$1 > 1'
    ids = Counter(
        line["request_id"]
        for line in parsed_logs(log_lines)
        if line["service"] == "bridge"
        and line["event"] == "http_request"
        and line["actor_id"] == "agent-disp"
        and line["request_id"] is not None
    )
    assert {rid: n for rid, n in ids.items() if n > 1} == {reused_id: 2}

    # 3. what the key was first used for; who claims keys
    [origin] = await psql(rb, bridge, "WHERE k.key = '$REQUEST_ID'", REQUEST_ID=reused_id)
    assert (origin["principal_id"], origin["method"], origin["path"]) == (
        "bridge",
        "POST",
        first_path,
    )
    assert (origin["actor_id"], origin["tool_name"], origin["event"]) == (
        "agent-disp",
        "customer.follow_up",
        "contact_attempt",
    )
    claims = await psql(rb, bridge, "GROUP BY 1, 2, 3")
    assert {(r["principal_id"], r["actor_id"], r["tool_name"], r["keys"]) for r in claims} == {
        ("bridge", "agent-disp", "ticket.create", 2),
        ("bridge", "agent-disp", "customer.follow_up", 1),
        ("sup-1", "sup-1", None, 1),
    }

    # 4. the refused contact attempt, made again as a new call
    [written] = rb.tool_calls("customer.follow_up")
    body = orjson.loads(fill(written, {"TICKET": second, "(date +%s)": "1764000000"}))
    again = await bridge.invoke(
        "customer.follow_up", body["arguments"], tool_call_id=body["tool_call_id"]
    )
    assert again.body["ok"], again.body
    assert again.body["result"]["event"]["type"] == "contact_attempt"
    assert again.body["request_id"] != reused_id
    assert sample(await scrape(bridge), "idempotency_conflict_total") == 2


# --- RB4 ----------------------------------------------------------------------------------


async def test_rb4_sla_breach_tells_provider_from_customer_delay(
    bridge: Bridge, clock: FakeClock
) -> None:
    rb = Runbook.load("RB4")
    parts = await create(bridge, priority="P1")  # scheduled, then waits for a part
    await act(bridge, "ticket.schedule", parts, **WINDOW)
    await act(bridge, "ticket.hold", parts, cause="provider", reason="Replacement valve on order.")
    away = await create(bridge)  # P2; the customer is away for an hour
    await act(bridge, "ticket.hold", away, cause="customer", reason="Customer away; no access.")
    clock.advance(hours=1)
    await act(bridge, "ticket.resume", parts)
    await act(bridge, "ticket.resume", away)
    clock.advance(hours=4, minutes=30)
    await bridge.api.app_service.sweep_sla()

    # 1. what is breached now
    metrics = await scrape(bridge)
    assert sample(metrics, "sla_breach_total", priority="P1") == 1
    assert sample(metrics, "sla_breach_total", priority="P2") == 1
    assert sample(metrics, "tickets_sla", status="breached") == 2
    text = await operator(rb, bridge, "dispatch-bridge sla")
    lines = text.splitlines()[1:]  # both breached, the most urgent first
    assert len(lines) == 2
    # status, ticket, prio, state, response left (- late), resolution left (- late), technician
    assert re.split(r"\s{2,}", lines[0]) == [
        "breached",
        parts,
        "P1",
        "SCHEDULED",
        "-3h30m",
        "2h30m",
        "tech-1",
    ]
    assert re.split(r"\s{2,}", lines[1]) == [
        "breached",
        away,
        "P2",
        "READY_TO_SCHEDULE",
        "-30m00s",
        "19h30m",
        "-",
    ]
    now = orjson.loads(await operator(rb, bridge, "dispatch-bridge sla --json"))
    # jq -r '.breached[] | [.id, .priority, .state, .time_in_state_s]'
    assert [
        [t["id"], t["priority"], t["state"], t["time_in_state_s"]] for t in now["breached"]
    ] == [
        [parts, "P1", "SCHEDULED", 16200.0],
        [away, "P2", "READY_TO_SCHEDULE", 16200.0],
    ]

    # 2. who caused the delay
    async def breach(tid: str) -> tuple[Any, ...]:
        timeline = await api_get(rb, bridge, "/v1/tickets/$TICKET/timeline", TICKET=tid)
        # jq -c '.events[] | select(.type == "sla_breached") | {at, target, late_by_s, ...}'
        [found] = [e["details"] for e in timeline["events"] if e["type"] == "sla_breached"]
        return tuple(
            found[k]
            for k in ("target", "late_by_s", "delay_cause", "customer_hold_s", "provider_hold_s")
        )

    # (target, late_by_s, delay_cause, customer_hold_s, provider_hold_s)
    assert await breach(parts) == ("response", 12600, "provider", 0, 3600)
    assert await breach(away) == ("response", 1800, "unattributed", 3600, 0)
    story = await operator(rb, bridge, 'dispatch-bridge why "$TICKET"', TICKET=parts)
    [breach_line] = [line for line in story.splitlines() if "sla_breached" in line]
    assert "system:sla-sweeper (system)" in breach_line
    assert "response target missed" in breach_line
    await bridge.api.app_service.sweep_sla()  # recorded once, however often it sweeps
    listed = await psql(rb, bridge, "ORDER BY at DESC")
    assert {
        (str(r["ticket_id"]), r["priority"], r["target"], r["delay_cause"], r["provider_hold_s"])
        for r in listed
    } == {(parts, "P1", "response", "provider", 3600), (away, "P2", "response", "unattributed", 0)}
    by_cause = await psql(rb, bridge, "GROUP BY 1, 2, 3")
    assert {(r["priority"], r["target"], r["delay_cause"], r["breaches"]) for r in by_cause} == {
        ("P1", "response", "provider", 1),
        ("P2", "response", "unattributed", 1),
    }

    # 3.-5. escalate, record the mitigation, dispatch
    escalated = await tool_call(rb, bridge, "ticket.escalate", TICKET=parts)
    assert escalated.body["result"]["ticket"]["state"] == "SCHEDULED"
    assert escalated.body["result"]["event"]["type"] == "escalation"
    assert escalated.body["result"]["event"]["details"] == {"level": "manager"}
    mitigated = await tool_call(rb, bridge, "mitigation.record", TICKET=parts)
    assert mitigated.body["result"]["event"]["type"] == "mitigation"
    assert mitigated.body["result"]["event"]["details"] == {
        "action": "customer told to shut off the water main"
    }
    dispatched = await tool_call(rb, bridge, "ticket.dispatch", TICKET=parts, TECH="tech-1")
    assert dispatched.body["result"]["ticket"]["state"] == "DISPATCHED"
    not_scheduled = await tool_call(rb, bridge, "ticket.dispatch", TICKET=away, TECH="tech-1")
    assert not_scheduled.body["error"]["code"] == "invalid_transition"

    # done: the story shows it; arrival takes the ticket off the breached list
    story = await operator(rb, bridge, 'dispatch-bridge why "$TICKET"', TICKET=parts)
    events = [line.split()[2] for line in story.splitlines()[1:]]
    assert events[-3:] == ["escalation", "mitigation", "dispatched"]
    await act(bridge, "tech.arrive", parts, as_="technician")
    now = orjson.loads(await operator(rb, bridge, "dispatch-bridge sla --json"))
    assert [t["id"] for t in now["breached"]] == [away]
    metrics = await scrape(bridge)
    assert sample(metrics, "sla_breach_total", priority="P1") == 1


# --- RB5 ----------------------------------------------------------------------------------


async def _ask_to_cancel(bridge: Bridge, tid: str, reason: str) -> dict[str, Any]:
    """An agent's gated ticket.cancel, as the bridge sends it to dispatch-api."""
    key = str(uuid.uuid4())
    headers = {
        "X-Actor-Type": "agent",
        "X-Actor-Id": "agent-disp",
        "X-Actor-Role": "dispatcher",
        "X-Tool-Name": "ticket.cancel",
        "X-Request-ID": key,
    }
    asked = await bridge.api.request(
        "POST",
        f"/v1/tickets/{tid}/cancel",
        json={"reason": reason},
        as_="gateway",
        key=key,
        headers=headers,
    )
    assert asked.status == 202, asked.body
    approval: dict[str, Any] = asked.body["approval"]
    return approval


async def approval_sweep(bridge: Bridge) -> None:
    """What dispatch-api's sweep loop does every interval: expire, refresh the gauges."""
    assert bridge.api.app is not None
    await bridge.api.app[APPROVALS].sweep()


@pytest.mark.parametrize("shipped_approvals", [True])
async def test_rb5_approvals_waiting_are_listed_decided_and_audited(
    bridge: Bridge, clock: FakeClock, shipped_approvals: bool
) -> None:
    rb = Runbook.load("RB5")
    clock.advance(minutes=-7)  # asked 7 minutes ago, by the services' and the operator's clocks
    tickets = [await create(bridge) for _ in range(3)]
    reasons = ["customer cancelled by phone", "duplicate of another job", "site closed"]
    asked = []
    for ticket, reason in zip(tickets, reasons, strict=True):
        asked.append(await _ask_to_cancel(bridge, ticket, reason))
        clock.advance(seconds=1)  # one after the other: oldest first is this order
    clock.advance(minutes=7, seconds=-3)
    await approval_sweep(bridge)

    # when it fires: the gauges
    metrics = await scrape(bridge)
    assert sample(metrics, "approvals_pending", tool="ticket.cancel") == 3
    oldest = sample(metrics, "approvals_oldest_pending_seconds", tool="ticket.cancel")
    assert oldest is not None
    assert oldest >= 420  # > 300: the alert's condition holds

    # 1. what is waiting, oldest first
    rows = table(await operator(rb, bridge, "dispatch-bridge approvals"))
    assert list(rows) == [a["id"] for a in asked]
    # approval, status, ticket, tool, arguments, requested by, age, expires in, approvers
    first = rows[asked[0]["id"]]
    assert first[1:6] == [
        "pending",
        tickets[0],
        "ticket.cancel",
        f'reason="{reasons[0]}"',
        "agent:agent-disp (dispatcher)",
    ]
    assert first[6].startswith("7m"), first  # age
    assert first[7].startswith("52m"), first  # expires in: the rule's 60 minutes, less 7
    assert first[8] == "supervisor,dispatcher"
    listed = orjson.loads(await operator(rb, bridge, "dispatch-bridge approvals --json"))
    # jq -r '.[] | [.id, .ticket_id, .tool, .rule, .ticket_state, .ticket_priority,
    #   .arguments.reason // .arguments.bypass_reason]'
    assert [
        [
            a["id"],
            a["ticket_id"],
            a["tool"],
            a["rule"],
            a["ticket_state"],
            a["ticket_priority"],
            a["arguments"].get("reason") or a["arguments"].get("bypass_reason"),
        ]
        for a in listed
    ] == [
        [a["id"], t, "ticket.cancel", "cancel", "READY_TO_SCHEDULE", "P2", r]
        for a, t, r in zip(asked, tickets, reasons, strict=True)
    ]

    # 3. the ticket before deciding
    story = await operator(rb, bridge, 'dispatch-bridge why "$TICKET"', TICKET=tickets[0])
    [requested] = [line for line in story.splitlines() if "approval_requested" in line]
    assert "agent:agent-disp (dispatcher)" in requested
    assert "ticket.cancel" in requested
    now = await tool_call(rb, bridge, "ticket.get", TICKET=tickets[0])
    assert now.body["result"]["ticket"]["state"] == "READY_TO_SCHEDULE"

    # 4. decide: approve the first, deny the second
    approved = await operator(
        rb,
        bridge,
        'dispatch-bridge approve "$APPROVAL" --reason "customer confirmed by phone"',
        APPROVAL=asked[0]["id"],
    )
    assert approved.startswith(f"executed: ticket.cancel on ticket {tickets[0]} ran (HTTP 200")
    assert "ticket now CANCELLED" in approved
    denied = await operator(
        rb,
        bridge,
        'dispatch-bridge deny "$APPROVAL" --reason "customer still wants the visit"',
        APPROVAL=asked[1]["id"],
    )
    assert denied == (
        f"denied: ticket.cancel on ticket {tickets[1]} (reason: customer still wants the visit)"
    )

    # 5. stale: the third ticket changed since the agent asked
    await act(bridge, "ticket.hold", tickets[2], cause="customer", reason="Customer away.")
    with pytest.raises(DecisionRefused, match=rf"409 approval_stale: ticket {tickets[2]} changed"):
        await operator(
            rb,
            bridge,
            'dispatch-bridge approve "$APPROVAL" --reason "customer confirmed by phone"',
            APPROVAL=asked[2]["id"],
        )

    # 6. who approved what on the ticket
    events = orjson.loads(
        await operator(rb, bridge, 'dispatch-bridge why "$TICKET" --json', TICKET=tickets[0])
    )
    # jq -c '.[] | select(.type | startswith("approval_")) | {seq, type, actor_id, role, ...}'
    assert [
        (e["type"], e["actor_id"], e["role"]) for e in events if e["type"].startswith("approval_")
    ] == [
        ("approval_requested", "agent-disp", "dispatcher"),
        ("approval_granted", "sup-1", "supervisor"),
    ]
    story = await operator(rb, bridge, 'dispatch-bridge why "$TICKET"', TICKET=tickets[0])
    [cancelled_line] = [line for line in story.splitlines() if " cancelled " in line]
    assert "agent:agent-disp (dispatcher) approved by sup-1 (supervisor)" in cancelled_line
    [cancelled] = [e for e in events if e["type"] == "cancelled"]
    assert (cancelled["actor_id"], cancelled["tool_name"]) == ("agent-disp", "ticket.cancel")
    assert cancelled["details"]["approved_by"] == {"id": "sup-1", "role": "supervisor"}

    # 2. the decisions, as the runbook's PromQL reads them; done: nothing left waiting
    await approval_sweep(bridge)
    metrics = await scrape(bridge)
    for decision in ("granted", "denied", "stale"):
        labels = {"tool": "ticket.cancel", "decision": decision}
        assert sample(metrics, "approval_decisions_total", **labels) == 1, decision
    assert sample(metrics, "approvals_pending", tool="ticket.cancel") == 0
    assert await operator(rb, bridge, "dispatch-bridge approvals") == "no pending approvals"


# --- every runbook ------------------------------------------------------------------------


def _selectors(query: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) a PromQL expression refers to."""
    bare = re.sub(r'"[^"]*"', '""', query)
    bare = re.sub(r"\[[^\]]*\]", "", bare)
    labels = set(re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", bare))
    labels |= set(re.findall(r"([A-Za-z_]\w*)\s*=~?", " ".join(re.findall(r"\{([^}]*)\}", bare))))
    bare = re.sub(r"\b(?:by|without)\s*\([^)]*\)", "", bare)
    bare = re.sub(r"\{[^}]*\}", "", bare)
    names = set(re.findall(r"[A-Za-z_:][\w:]*", bare)) - PROMQL_WORDS
    label_names = {name.strip() for group in labels for name in group.split(",") if name.strip()}
    return names, label_names


@pytest.mark.parametrize("shipped_approvals", [True])
async def test_every_runbook_promql_parses_and_names_live_metrics_and_labels(
    bridge: Bridge, tmp_path: Path, shipped_approvals: bool
) -> None:
    tid = await create(bridge)  # tool calls, transitions and an error, so their series exist
    await bridge.invoke("tech.arrive", {"ticket_id": tid})
    await act(bridge, "ticket.schedule", tid, **WINDOW)
    gated = await _ask_to_cancel(bridge, await create(bridge), "duplicate")  # and a decision
    denied = await bridge.api.request(
        "POST", f"/v1/approvals/{gated['id']}/deny", json={"reason": "no"}, key=None
    )
    assert denied.status == 200, denied.body
    queries = {
        f"{name}:{i}": q for name in FILES for i, q in enumerate(Runbook.load(name).promql())
    }
    rules = {
        "groups": [
            {
                "name": "runbooks",
                "rules": [
                    {"record": f"runbook:q{i}", "expr": q} for i, q in enumerate(queries.values())
                ],
            }
        ]
    }
    path = tmp_path / "runbook-rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML

    checked = await asyncio.to_thread(
        subprocess.run,
        ["promtool", "check", "rules", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    exposed: dict[str, set[str]] = {}
    for name, label_values in await scrape(bridge):
        exposed.setdefault(name, set()).update(label for label, _ in label_values)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert {q.split(":")[0] for q in queries} == set(FILES)  # every runbook has PromQL
    for where, query in queries.items():
        names, labels = _selectors(query)
        assert names, (where, query)
        assert names <= set(exposed), (where, query, names - set(exposed))
        known = set().union(*(exposed[n] for n in names))
        assert labels <= known, (where, query, labels - known)


def test_every_runbook_has_its_sections_and_well_formed_commands() -> None:
    index = (RUNBOOKS / "README.md").read_text()
    placeholders = {
        "TICKET": str(uuid.uuid4()),
        "APPROVAL": str(uuid.uuid4()),
        "TECH": "tech-1",
        "SKILL": "water_leak",
        "PHONE": "+44 20 7946 0001",
        "WINDOW_START": WINDOW["window_start"],
        "WINDOW_END": WINDOW["window_end"],
        "PHOTO_B64": "aGk=",
        "SIGNATURE_B64": "aGk=",
        "(date +%s)": "1",
    }
    for name, file in FILES.items():
        rb = Runbook.load(name)
        assert f"]({file})" in index, f"the index does not link {file}"
        assert rb.text.startswith(f"# {name} — ")
        positions = [rb.text.find(f"\n{section}\n") for section in SECTIONS]
        assert -1 not in positions, (name, dict(zip(SECTIONS, positions, strict=True)))
        assert positions == sorted(positions), f"{name}: sections out of order"
        for section, body in zip(SECTIONS, _section_bodies(rb.text), strict=True):
            assert body.strip(), f"{name}: {section} is empty"
        # Every tool call is valid for its tool; every operator command parses.
        calls = rb.all_tool_calls()
        assert calls, name
        for tool, body in calls:
            invocation = orjson.loads(fill(body, placeholders))
            try:
                TOOLS[tool].validator.validate(invocation["arguments"])
            except ToolError as exc:
                pytest.fail(f"{name}: the {tool} call is invalid: {exc.message}")
        for command in rb.operator_commands():
            _parser().parse_args(shlex.split(fill(command, placeholders))[1:])


def _section_bodies(text: str) -> list[str]:
    bodies = []
    for section in SECTIONS:
        rest = text.split(f"\n{section}\n", 1)[1]
        bodies.append(rest.split("\n## ", 1)[0])
    return bodies
