"""A Jepsen-style history check: what the agents were told, against what the database holds.

Simulated agents (`testkit.agents`) record one `Call` per tool call they issue. A
mutating call's effect is the one timeline event dispatch-api appends under its request_id:
every mutation appends exactly one, accepted or rejected (ticket.create's is the new
ticket's `created` event). Re-deliveries of one tool_call_id are one *operation*: the bridge
derives the same request_id for them, so dispatch-api may apply it once at most.

`check` reads the database once the run is over and reports, per operation:

- lost: acknowledged to the agent (ok, or a recorded refusal such as invalid_transition),
  yet no effect;
- doubled: more than one effect under one request_id;
- phantom: an effect no recorded operation explains, or one of an operation the bridge
  refused before it reached dispatch-api;
- mismatch: the effect is not what the agent was told (another ticket or seq);
- reordered: two acknowledged operations on one ticket whose effects are in the opposite
  order of real time (the first was acknowledged before the second was issued);
- unstable_id: deliveries of one operation answered under different request_ids;
- late: a call that ended after its deadline (the retry policy's `deadline_s`) plus slack;
- stuck_key: an idempotency key claimed and never answered;
- false_none: an effect under an operation whose every delivery was answered with an error
  claiming `details.outcome: none` (nothing applied) or refused before it ran: the bridge
  said nothing happened, yet it did (an agent believing it re-sends under a new id and
  doubles the effect).

Gated calls (issue 18) have one approval row under their request_id. Its `approval_*`
timeline events record the approval, not the call's effect, and `approval_pending` tells the
agent "nothing yet", so the approval's status decides instead:

- unapproved: an effect under an approval that is pending, denied, expired, stale or
  withdrawn (or an `approved` one, refused when run, whose effect is not a rejection);
- lost: an executed approval without its one effect (more than one is `doubled`);
- phantom: an approval no recorded operation asked for;
- doubled: a gated call asked for twice (more `approval_requested` events than approvals).

An operation neither acknowledged nor refused is indeterminate: it may or may not have been
applied, but never twice.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from bridge._pipeline import REQUEST_ID_NAMESPACE
from dispatch_client import RetryConfig
from tools import catalog

#: Tools that change something (everything else only reads).
MUTATING = frozenset(t.name for t in catalog() if not t.read_only)
#: The outcome of a call that got no answer at all (reset, timeout on the agent's side).
NO_ANSWER = "no_answer"
#: Approvals whose bound call ran: `executed` took effect, `approved` was refused when run.
RAN = frozenset({"executed", "approved"})
#: Timeline events of a call refused by the domain (its recorded refusal, not a change).
REJECTIONS = frozenset({"action_rejected", "completion_rejected"})


@dataclass(frozen=True, slots=True)
class Call:
    """One tool call as the agent saw it. `start`/`end` are `time.monotonic()` seconds.

    `reached` is True when the bridge ran the call (it minted a request_id), False when it
    refused it before (bad key, rate limit, at capacity), None when the agent cannot tell.
    `request_id` is the one the bridge answered with, if it said. `claimed` is an error
    answer's `details.outcome` (`none` or `unknown`), None for a success or no answer.
    """

    agent: str
    principal: str
    tool: str
    arguments: dict[str, Any]
    tool_call_id: str
    transport: str
    start: float
    end: float
    outcome: str
    reached: bool | None
    request_id: str | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    claimed: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    @property
    def acknowledged(self) -> bool:
        """Answered for good: the change happened, or was refused and recorded."""
        return self.ok or self.recorded_refusal

    @property
    def recorded_refusal(self) -> bool:
        """Refused and recorded: dispatch-api appended the rejection event its details name
        (`event_seq`), whatever the code (invalid_transition, evidence_missing, a scheduling
        rule's not_found or invalid_arguments)."""
        details = (self.error or {}).get("details") or {}
        return not self.ok and "event_seq" in details

    @property
    def claims_nothing_applied(self) -> bool:
        """An error answer (not a recorded refusal, whose effect is its rejection event)
        saying no try of this delivery was applied."""
        return not self.acknowledged and self.claimed == "none"

    @property
    def mutating(self) -> bool:
        return self.tool in MUTATING

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def derived_request_id(self) -> str:
        """The request_id the bridge derives from (agent, tool, tool_call_id)."""
        name = f"{self.principal}\n{self.tool}\n{self.tool_call_id}"
        return str(uuid.uuid5(REQUEST_ID_NAMESPACE, name))

    def told_event(self) -> tuple[str, int] | None:
        """(ticket_id, seq) of the effect the agent was told about, if it was."""
        if self.ok and self.result is not None and isinstance(self.result.get("event"), dict):
            event = self.result["event"]
            return str(event["ticket_id"]), int(event["seq"])
        details = (self.error or {}).get("details") or {}
        if self.recorded_refusal:
            return str(details["ticket_id"]), int(details["event_seq"])
        return None

    def brief(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "tool": self.tool,
            "tool_call_id": self.tool_call_id,
            "transport": self.transport,
            "outcome": self.outcome,
            "request_id": self.request_id,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True, slots=True)
class Effect:
    """A timeline event, as the database holds it."""

    request_id: str
    ticket_id: str
    seq: int
    type: str


@dataclass(frozen=True, slots=True)
class Operation:
    """The deliveries of one tool_call_id: one request_id, applied at most once."""

    request_id: str
    deliveries: tuple[Call, ...]

    @property
    def issued_at(self) -> float:
        return min(c.start for c in self.deliveries)

    @property
    def acknowledgement(self) -> Call | None:
        """The first delivery answered for good, if any."""
        acks = [c for c in self.deliveries if c.acknowledged]
        return min(acks, key=lambda c: c.end) if acks else None

    @property
    def acknowledged_at(self) -> float:
        ack = self.acknowledgement
        assert ack is not None
        return ack.end


@dataclass(frozen=True, slots=True)
class Violation:
    kind: str
    detail: str
    calls: tuple[Call, ...] = ()

    def describe(self) -> str:
        calls = "; ".join(str(c.brief()) for c in self.calls[:6])
        return f"{self.kind}: {self.detail}" + (f" [{calls}]" if calls else "")


@dataclass
class Report:
    calls: int = 0
    ok: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    operations: int = 0
    #: Operations the agent had to deliver more than once (same tool_call_id).
    redelivered: int = 0
    acknowledged: int = 0
    #: Operations every answer of which said nothing was applied (refused, or outcome none).
    refused: int = 0
    indeterminate: int = 0
    #: Indeterminate operations that did take effect (once).
    indeterminate_applied: int = 0
    effects: int = 0
    tickets: int = 0
    lost: int = 0
    doubled: int = 0
    late: int = 0
    #: Error answers by what they claimed of the effect: {"none": n, "unknown": m}.
    claimed: Counter[str] = field(default_factory=Counter)
    false_none: int = 0
    #: Gated calls by their approval's status: {"executed": n, "denied": m, ...}.
    approvals: Counter[str] = field(default_factory=Counter)
    max_call_s: float = 0.0
    downstream_tries: int | None = None
    violations: list[Violation] = field(default_factory=list)

    @property
    def amplification(self) -> float | None:
        """Downstream HTTP tries per tool call (1.0: no retry ever went out)."""
        if self.downstream_tries is None or not self.calls:
            return None
        return self.downstream_tries / self.calls

    def as_dict(self) -> dict[str, Any]:
        amplification = self.amplification
        return {
            "calls": self.calls,
            "ok": self.ok,
            "outcomes": dict(sorted(self.outcomes.items())),
            "operations": self.operations,
            "redelivered": self.redelivered,
            "acknowledged": self.acknowledged,
            "refused": self.refused,
            "indeterminate": self.indeterminate,
            "indeterminate_applied": self.indeterminate_applied,
            "effects": self.effects,
            "tickets": self.tickets,
            "lost": self.lost,
            "doubled": self.doubled,
            "late": self.late,
            "claimed": dict(sorted(self.claimed.items())),
            "false_none": self.false_none,
            "approvals": dict(sorted(self.approvals.items())),
            "max_call_s": round(self.max_call_s, 3),
            "downstream_tries": self.downstream_tries,
            "retry_amplification": None if amplification is None else round(amplification, 4),
            "violations": [v.describe() for v in self.violations[:50]],
            "violation_count": len(self.violations),
        }

    def describe(self) -> str:
        lines = [f"{len(self.violations)} violations of {self.operations} operations:"]
        lines += [f"  {v.describe()}" for v in self.violations[:20]]
        return "\n".join(lines)


async def check(
    calls: Sequence[Call],
    database_url: str,
    *,
    retry: RetryConfig,
    slack_s: float = 1.0,
    gateway: str = "bridge",
    downstream_tries: int | None = None,
    settle_s: float = 10.0,
) -> Report:
    """Check `calls` against the database at `database_url` (read once the run is over).

    `retry` is the bridge's retry configuration (each call's deadline is its tool's
    `deadline_s`), `slack_s` what the answer may add on top, `gateway` the bridge's
    dispatch-api principal (whose idempotency keys are checked). `downstream_tries` (HTTP
    requests dispatch-api was sent, however counted) gives the retry amplification.
    The database is read once no transaction is left running in it (at most `settle_s`):
    a try the bridge gave up on may still be running in dispatch-api.
    """
    conn = await asyncpg.connect(database_url)
    try:
        await _settle(conn, settle_s)
        rows = await conn.fetch(
            "SELECT request_id, ticket_id::text AS ticket_id, seq, type FROM timeline_events"
            " WHERE request_id IS NOT NULL"
        )
        tickets = await conn.fetchval("SELECT count(*) FROM tickets")
        keys = await conn.fetch(
            "SELECT key, status_code FROM idempotency_keys WHERE principal_id = $1", gateway
        )
        gated = {
            r["request_id"]: r["status"]
            for r in await conn.fetch(
                "SELECT request_id, status FROM approvals WHERE principal_id = $1", gateway
            )
        }
    finally:
        await conn.close()
    effects: dict[str, list[Effect]] = defaultdict(list)
    requested = 0
    for row in rows:
        if row["type"].startswith("approval_"):
            requested += row["type"] == "approval_requested"
            continue
        effects[row["request_id"]].append(
            Effect(row["request_id"], row["ticket_id"], row["seq"], row["type"])
        )
    report = Report(calls=len(calls), downstream_tries=downstream_tries, tickets=tickets)
    report.effects = sum(len(found) for found in effects.values())
    for c in calls:
        report.outcomes[c.outcome] += 1
        if c.claimed is not None:
            report.claimed[c.claimed] += 1
        report.ok += c.ok
        report.max_call_s = max(report.max_call_s, c.seconds)
    _check_deadlines(calls, retry, slack_s, report)
    operations = _operations(calls)
    report.operations = len(operations)
    report.redelivered = sum(1 for op in operations.values() if len(op.deliveries) > 1)
    acknowledged: list[tuple[Operation, Effect]] = []
    for op in operations.values():
        found = effects.get(op.request_id, [])
        if op.request_id in gated and op.acknowledgement is None:
            # approval_pending was true when said: the approval decides (below).
            _check_ids(op, report)
        else:
            _check_operation(op, found, report)
        if op.acknowledgement is not None and len(found) == 1:
            acknowledged.append((op, found[0]))
    _check_real_time_order(acknowledged, report)
    _check_approvals(gated, requested, effects, operations, report)
    for request_id, found in effects.items():
        if request_id not in operations:
            report.violations.append(
                Violation("phantom", f"{len(found)} effects of unknown request_id {request_id}")
            )
    created = sum(1 for found in effects.values() for e in found if e.type == "created")
    if created != tickets:
        report.violations.append(
            Violation("phantom", f"{tickets} tickets, but {created} created events")
        )
    answered = {k["key"]: k["status_code"] for k in keys}
    for request_id in effects:
        if request_id in operations and answered.get(request_id) is None:
            report.violations.append(
                Violation("stuck_key", f"effect of {request_id} without an answered key")
            )
    stuck = sum(1 for status in answered.values() if status is None)
    if stuck:
        report.violations.append(Violation("stuck_key", f"{stuck} keys claimed, never answered"))
    return report


async def _settle(conn: asyncpg.Connection, timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    until = loop.time() + timeout_s
    while loop.time() < until:
        busy = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND state <> 'idle'"
        )
        if not busy:
            return
        await asyncio.sleep(0.1)


def _operations(calls: Iterable[Call]) -> dict[str, Operation]:
    """Mutating calls grouped by the request_id their (agent, tool, tool_call_id) derives."""
    grouped: dict[str, list[Call]] = defaultdict(list)
    for c in calls:
        if c.mutating:
            grouped[c.derived_request_id].append(c)
    return {rid: Operation(rid, tuple(deliveries)) for rid, deliveries in grouped.items()}


def _check_deadlines(
    calls: Iterable[Call], retry: RetryConfig, slack_s: float, report: Report
) -> None:
    for c in calls:
        limit = retry.for_tool(c.tool).deadline_s + slack_s
        if c.seconds > limit:
            report.late += 1
            report.violations.append(
                Violation("late", f"took {c.seconds:.2f}s, deadline + slack {limit:.2f}s", (c,))
            )


def _check_ids(op: Operation, report: Report) -> None:
    said = {c.request_id for c in op.deliveries if c.request_id is not None}
    if said - {op.request_id}:
        report.violations.append(
            Violation("unstable_id", f"answered as {sorted(said)}", op.deliveries)
        )


def _check_operation(op: Operation, found: list[Effect], report: Report) -> None:
    _check_ids(op, report)
    if len(found) > 1:
        report.doubled += 1
        report.violations.append(
            Violation(
                "doubled", f"{len(found)} effects under {op.request_id}: {found}", op.deliveries
            )
        )
    acks = [c for c in op.deliveries if c.acknowledged]
    if acks:
        report.acknowledged += 1
        if not found:
            report.lost += 1
            report.violations.append(
                Violation("lost", f"acknowledged, no effect under {op.request_id}", op.deliveries)
            )
            return
        told = {t for c in acks if (t := c.told_event()) is not None}
        actual = {(e.ticket_id, e.seq) for e in found}
        if not told <= actual:
            report.violations.append(
                Violation("mismatch", f"told {sorted(told)}, holds {sorted(actual)}", tuple(acks))
            )
        return
    if all(c.reached is False for c in op.deliveries):
        report.refused += 1
        if found:
            report.violations.append(
                Violation("phantom", f"refused before it ran, yet {found}", op.deliveries)
            )
        return
    if all(c.reached is False or c.claims_nothing_applied for c in op.deliveries):
        # No delivery left the outcome open: an effect means some `none` was false.
        report.refused += 1
        if found:
            report.false_none += 1
            report.violations.append(
                Violation("false_none", f"answered outcome none, yet {found}", op.deliveries)
            )
        return
    report.indeterminate += 1
    report.indeterminate_applied += bool(found)


def _check_real_time_order(acknowledged: list[tuple[Operation, Effect]], report: Report) -> None:
    """If operation A was acknowledged before operation B was first issued, A's effect comes
    before B's on their ticket: each timeline is a linearization of what agents were told."""
    by_ticket: dict[str, list[tuple[Operation, Effect]]] = defaultdict(list)
    for pair in acknowledged:
        by_ticket[pair[1].ticket_id].append(pair)
    for pairs in by_ticket.values():
        pairs.sort(key=lambda p: p[1].seq)
        for i, (first, first_effect) in enumerate(pairs):
            for then, then_effect in pairs[i + 1 :]:
                if then.acknowledged_at < first.issued_at:
                    report.violations.append(
                        Violation(
                            "reordered",
                            f"seq {then_effect.seq} was acknowledged before seq"
                            f" {first_effect.seq} was issued",
                            (*then.deliveries, *first.deliveries),
                        )
                    )


def _check_approvals(
    gated: dict[str, str],
    requested: int,
    effects: dict[str, list[Effect]],
    operations: dict[str, Operation],
    report: Report,
) -> None:
    """Every executed approval has exactly one effect under its request_id; every other
    status none (an `approved` one, refused when run, at most its recorded refusal)."""
    if requested != len(gated):
        report.violations.append(
            Violation("doubled", f"{requested} approval_requested events, {len(gated)} approvals")
        )
    for request_id, status in gated.items():
        report.approvals[status] += 1
        found = effects.get(request_id, [])
        deliveries = operations[request_id].deliveries if request_id in operations else ()
        if not deliveries:
            report.violations.append(Violation("phantom", f"{status} approval of {request_id}"))
        if len(found) > 1 and not (deliveries and operations[request_id].acknowledgement):
            report.doubled += 1  # (an acknowledged operation's are counted with it)
            report.violations.append(Violation("doubled", f"{status}: {found}", deliveries))
        elif status == "executed" and not found:
            report.lost += 1
            report.violations.append(
                Violation("lost", f"approval executed, no effect under {request_id}", deliveries)
            )
        elif status == "approved" and any(e.type not in REJECTIONS for e in found):
            report.violations.append(
                Violation("unapproved", f"refused when run, yet {found}", deliveries)
            )
        elif status not in RAN and found:
            report.violations.append(
                Violation("unapproved", f"approval {status}, yet {found}", deliveries)
            )
