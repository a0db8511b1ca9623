"""Operator commands: `why`, `queue`, `sla`, `tools` — the five questions from a terminal
(`approvals`, `approve`, `deny`: _approvals_cli.py).

They talk HTTP to the running services (DISPATCH_API_URL + DISPATCH_API_TOKEN,
DISPATCH_BRIDGE_URL + DISPATCH_AGENT_KEY, else `$DISPATCH_DATA_DIR/dev-credentials.json`;
`tools` reads fleet-wide figures from DISPATCH_PROMETHEUS_URL when set),
print aligned tables for people and JSON with `--json`, and fail with one line and exit 1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from telemetry import ToolHealthError, tool_health


class OpsError(Exception):
    """One line for the operator; the command exits 1."""


@dataclass(frozen=True, slots=True)
class Endpoints:
    api_url: str
    api_token: str
    bridge_url: str
    agent_key: str
    #: `tools` reads fleet-wide figures here when set (else the bridge's own /metrics).
    prometheus_url: str = ""

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], needs: tuple[str, ...] = ("api", "bridge")
    ) -> Endpoints:
        """The services' addresses and credentials from the environment, falling back to
        dev-credentials.json; only those of the services in `needs` must be known (why,
        queue and sla call dispatch-api alone). A trailing slash on a URL is dropped."""
        path = Path(env.get("DISPATCH_DATA_DIR", ".dispatch")) / "dev-credentials.json"
        creds: dict[str, Any] = {}
        if path.exists():
            creds = orjson.loads(path.read_bytes())
        values = {
            "api_url": env.get("DISPATCH_API_URL") or creds.get("api_url"),
            "api_token": env.get("DISPATCH_API_TOKEN") or creds.get("api_token"),
            "bridge_url": env.get("DISPATCH_BRIDGE_URL") or creds.get("bridge_url"),
            "agent_key": env.get("DISPATCH_AGENT_KEY") or creds.get("agent_key"),
            "prometheus_url": env.get("DISPATCH_PROMETHEUS_URL") or creds.get("prometheus_url"),
        }
        needed = {"api": ("api_url", "api_token"), "bridge": ("bridge_url", "agent_key")}
        missing = [k for service in needs for k in needed[service] if not values[k]]
        if missing:
            names = ", ".join("DISPATCH_" + k.upper() for k in missing)
            raise OpsError(f"set {names} (or run `make run`, which writes {path})")
        for url in ("api_url", "bridge_url", "prometheus_url"):
            values[url] = str(values[url] or "").rstrip("/")
        return cls(**{k: str(v or "") for k, v in values.items()})


#: At most this many rows are gathered for one listing: a ticket's whole history, the whole
#: queue or every approval ever would otherwise be paged without end. The text output says
#: when a listing was cut.
MAX_LISTED = 1000
#: Rows asked for per request while gathering.
PAGE_ROWS = 200

#: One page: its rows and where the next one starts (None after the last).
Page = tuple[list[dict[str, Any]], Any]


async def gather(
    next_page: Callable[[Any, int], Awaitable[Page]], most: int = MAX_LISTED
) -> tuple[list[dict[str, Any]], bool]:
    """At most `most` rows, page by page (`next_page(start, rows)`, start None first), and
    whether there were more."""
    found: list[dict[str, Any]] = []
    start: Any = None
    while len(found) < most:
        rows, start = await next_page(start, min(PAGE_ROWS, most - len(found)))
        found += rows[: most - len(found)]
        if not start:
            break
    return found, bool(start)


def cut_note(text: str, cut: bool, most: int, what: str) -> str:
    return f"{text}\n(the first {most} {what} shown; there are more)" if cut else text


async def _get(session: aiohttp.ClientSession, url: str, secret: str, what: str) -> Any:
    try:
        async with session.get(url, headers={"Authorization": f"Bearer {secret}"}) as resp:
            body = await resp.read()
            if resp.status >= 400:
                detail = _detail(body) or resp.reason
                raise OpsError(f"{what}: {resp.status} {detail}")
            if resp.content_type == "application/json":
                return orjson.loads(body)
            return body.decode()
    except aiohttp.ClientError as exc:
        raise OpsError(f"{what}: cannot reach {url.split('/v1')[0]} ({exc})") from None


def _detail(body: bytes) -> str | None:
    try:
        problem = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return str(problem.get("detail") or problem.get("code")) if isinstance(problem, dict) else None


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """Plain aligned columns, for people."""
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in cells
    )


def duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    sign = "-" if seconds < 0 else ""
    s = abs(int(seconds))
    if s >= 86400:
        return f"{sign}{s // 86400}d{s % 86400 // 3600}h"
    if s >= 3600:
        return f"{sign}{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{sign}{s // 60}m{s % 60:02d}s"


async def why(ends: Endpoints, ticket_id: str, as_json: bool, most: int = MAX_LISTED) -> str:
    """The ticket's timeline as a story: who did what, why, with which evidence (its first
    `most` events)."""
    async with aiohttp.ClientSession() as session:

        async def page(after: int | None, rows: int) -> Page:
            url = f"{ends.api_url}/v1/tickets/{ticket_id}/timeline?after_seq={after or 0}"
            got = await _get(session, f"{url}&limit={rows}", ends.api_token, f"ticket {ticket_id}")
            return got["events"], got["next_after_seq"]

        events, cut = await gather(page, most)
    if as_json:
        return orjson.dumps(events, option=orjson.OPT_INDENT_2).decode()
    rows = []
    for e in events:
        d = e["details"] or {}
        evidence = (
            d.get("evidence_id") and f"{d.get('kind')}:{d.get('tag') or '-'} {d['evidence_id'][:8]}"
        )
        missing = d.get("missing_evidence") and "missing " + ", ".join(
            f"{m['kind']}:{m.get('tag') or '-'}" for m in d["missing_evidence"]
        )
        rows.append(
            [
                e["seq"],
                e["at"][:19],
                e["type"],
                f"{e['from_state'] or '-'} -> {e['to_state']}",
                f"{e['actor_type']}:{e['actor_id']} ({e['role']})" + _approved_by(d),
                e["tool_name"],
                e["reason"] or missing or d.get("bypass_reason"),
                evidence,
                e["request_id"],
                e["trace_id"],
            ]
        )
    headers = [
        "seq",
        "at",
        "event",
        "state",
        "actor",
        "tool",
        "reason",
        "evidence",
        "request_id",
        "trace_id",
    ]
    return cut_note(table(rows, headers), cut, most, "events")


def _approved_by(details: dict[str, Any]) -> str:
    """A change a person approved names them beside the agent that asked for it."""
    by = details.get("approved_by")
    return f" approved by {by.get('id')} ({by.get('role')})" if isinstance(by, dict) else ""


async def queue(ends: Endpoints, states: list[str], as_json: bool, most: int = MAX_LISTED) -> str:
    """The queue in `states` (every state when empty), oldest first, its first `most` tickets."""
    async with aiohttp.ClientSession() as session:

        async def page(cursor: str | None, rows: int) -> Page:
            query = "&".join([f"state={quote(s)}" for s in states] + [f"limit={rows}"])
            query += f"&cursor={quote(cursor)}" if cursor else ""
            url = f"{ends.api_url}/v1/tickets?{query}"
            got = await _get(session, url, ends.api_token, "queue")
            return got["items"], got["next_cursor"]

        items, cut = await gather(page, most)
    if as_json:
        return orjson.dumps(items, option=orjson.OPT_INDENT_2).decode()
    rows = [
        [
            t["id"],
            t["state"],
            t["priority"],
            duration(t["time_in_state_s"]),
            duration(t["response_remaining_s"]),
            duration(t["resolution_remaining_s"]),
            ",".join(t["missing_fields"]) or None,
            f"{t['last_event']['type']} by {t['last_event']['actor_id']}",
        ]
        for t in items
    ]
    headers = [
        "ticket",
        "state",
        "prio",
        "in state",
        "response left",
        "resolution left",
        "missing",
        "last change",
    ]
    return cut_note(table(rows, headers), cut, most, "tickets")


#: The most /v1/sla lists per status (it is not paged: the most urgent come first).
SLA_ROWS = 200


async def sla(ends: Endpoints, as_json: bool, most: int = SLA_ROWS) -> str:
    """Breached and at-risk tickets, the most urgent `most` of each."""
    found: dict[str, list[dict[str, Any]]] = {}
    async with aiohttp.ClientSession() as session:
        for status in ("breached", "at_risk"):
            url = f"{ends.api_url}/v1/sla?status={status}&limit={most}"
            found[status] = (await _get(session, url, ends.api_token, "sla"))["items"]
    if as_json:
        return orjson.dumps(found, option=orjson.OPT_INDENT_2).decode()
    rows = [
        [
            status,
            t["id"],
            t["priority"],
            t["state"],
            duration(t["response_remaining_s"]),
            duration(t["resolution_remaining_s"]),
            (t.get("assignment") or {}).get("technician_id"),
        ]
        for status, items in found.items()
        for t in items
    ]
    full = [status for status, items in found.items() if len(items) >= most]
    text = table(
        rows,
        [
            "status",
            "ticket",
            "prio",
            "state",
            "response left (- late)",
            "resolution left (- late)",
            "technician",
        ],
    )
    for status in full:
        text += f"\n(the first {most} {status} shown; there may be more)"
    return text


async def tools(ends: Endpoints, as_json: bool, stuck_after_s: float = 10.0) -> str:
    """Per-tool figures, fleet-wide when DISPATCH_PROMETHEUS_URL is set (else the bridge's own
    /metrics), and the calls in flight at the bridge asked."""
    async with aiohttp.ClientSession() as session:
        try:
            health = await tool_health(session, ends.prometheus_url or None, ends.bridge_url)
        except ToolHealthError as exc:
            raise OpsError(f"tool figures: {exc}") from None
        inflight = await _get(
            session, f"{ends.bridge_url}/v1/ops/inflight", ends.agent_key, "calls in flight"
        )
    report = health.as_json()
    summary: list[dict[str, Any]] = report["tools"]
    stuck = [c for c in inflight["calls"] if c["age_ms"] >= stuck_after_s * 1000]
    if as_json:
        return orjson.dumps(
            {**report, "in_flight": inflight["calls"], "stuck": stuck},
            option=orjson.OPT_INDENT_2,
        ).decode()
    rows = [
        [
            t["tool"],
            t["calls"],
            f"{t['failure_ratio']:.1%}",
            ", ".join(f"{c}={n}" for c, n in t["failures_by_code"].items()) or None,
            None if t["p50_ms"] is None else f"{t['p50_ms']:.1f}",
            None if t["p99_ms"] is None else f"{t['p99_ms']:.1f}",
            t["retries"],
            t["in_flight"],
        ]
        for t in summary
    ]
    out = f"source: {health.source_line}; circuit breaker: {health.breaker_line}\n"
    out += table(
        rows,
        ["tool", "calls", "failed", "by code", "p50 ms", "p99 ms", "retries", "in flight"],
    )
    flight = [
        [
            c["tool"],
            f"{c['age_ms'] / 1000:.1f}s",
            c["ticket_id"],
            c["actor_id"],
            c["request_id"],
            "STUCK" if c in stuck else "",
        ]
        for c in inflight["calls"]
    ]
    out += (
        f"\n\nin flight at {ends.bridge_url}: {len(flight)}"
        f" (stuck after {stuck_after_s:g}s: {len(stuck)})"
    )
    if flight:
        out += "\n" + table(flight, ["tool", "age", "ticket", "actor", "request_id", ""])
    return out


def run(command: str, args: Any, env: Mapping[str, str] = os.environ) -> int:
    """Run one operator command; print its output, or one line and exit 1 on failure."""
    import asyncio

    try:
        ends = Endpoints.from_env(env, ("api", "bridge") if command == "tools" else ("api",))
        if command == "why":
            out = asyncio.run(why(ends, args.ticket_id, args.json))
        elif command == "queue":
            out = asyncio.run(queue(ends, args.state or [], args.json))
        elif command == "sla":
            out = asyncio.run(sla(ends, args.json))
        else:
            out = asyncio.run(tools(ends, args.json))
    except OpsError as exc:
        print(f"dispatch-bridge {command}: {exc}", file=sys.stderr)
        return 1
    emit(out)
    return 0


def emit(out: str) -> None:
    """Print a command's output; a reader that went away early is not an error."""
    try:
        print(out, flush=True)
    except BrokenPipeError:
        # The reader went away (`| head`): not an error of ours. Point stdout at /dev/null so
        # the interpreter's final flush does not fail again on the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
