"""Simulated agents: concurrent loops of mutating tool calls through the bridge over real HTTP,
each recorded as a `history.Call` for `history.check`.

An agent works one ticket at a time through create -> schedule -> hold -> resume ->
dispatch -> arrive -> follow-up -> cancel, then opens the next. Every call names its
tool_call_id. When the answer is transient or leaves the outcome open (timeout,
unavailable, no answer) the agent does what the tool error tells it to: it sends the call
again (same arguments, REST or MCP at random) a few times, under the same tool_call_id once
any answer said the outcome is unknown (or none came), under a new one while every answer
said nothing was applied (`details.outcome: none`); failing that, it re-reads the ticket
(ticket.get) and carries on from its true state.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson

from testkit.api import COMPLETE_TICKET, window

from .history import Call

#: Re-deliveries of one call whose outcome stayed open, before re-reading the ticket.
REDELIVERIES = 4
MCP_VERSION = "2026-07-28"
#: A tool error that tells the agent to come back (`details.outcome` says with which id).
_TRANSIENT = frozenset({"rate_limited", "in_progress", "upstream_unavailable"})


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A bridge, an agent key for it, and the agent id that key authenticates as."""

    url: str
    key: str
    principal: str


class Recorder:
    """Issues tool calls (REST invoke or MCP tools/call) and appends each to `calls`."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        endpoint: Endpoint,
        calls: list[Call],
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._endpoint = endpoint
        self.calls = calls
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._clock = clock

    async def call(
        self, agent: str, tool: str, arguments: dict[str, Any], tool_call_id: str, transport: str
    ) -> Call:
        start = self._clock()
        try:
            if transport == "mcp":
                answer = await self._mcp(tool, arguments, tool_call_id)
            else:
                answer = await self._rest(tool, arguments, tool_call_id)
        except (aiohttp.ClientError, OSError, TimeoutError, orjson.JSONDecodeError):
            answer = {"outcome": "no_answer", "reached": None}
        call = Call(
            agent=agent,
            principal=self._endpoint.principal,
            tool=tool,
            arguments=arguments,
            tool_call_id=tool_call_id,
            transport=transport,
            start=start,
            end=self._clock(),
            **answer,
        )
        self.calls.append(call)
        return call

    async def _post(self, path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
        sent = {
            "Authorization": f"Bearer {self._endpoint.key}",
            "Content-Type": "application/json",
            **headers,
        }
        async with self._http.post(
            self._endpoint.url + path, data=orjson.dumps(body), headers=sent, timeout=self._timeout
        ) as resp:
            return resp.status, orjson.loads(await resp.read())

    async def _rest(self, tool: str, arguments: Any, tool_call_id: str) -> dict[str, Any]:
        body = {"arguments": arguments, "tool_call_id": tool_call_id}
        status, envelope = await self._post(f"/v1/tools/{tool}/invoke", body, {})
        return _from_envelope(envelope, status)

    async def _mcp(self, tool: str, arguments: Any, tool_call_id: str) -> dict[str, Any]:
        meta = {
            "io.modelcontextprotocol/protocolVersion": MCP_VERSION,
            "io.modelcontextprotocol/clientCapabilities": {},
            "dispatch-bridge.dev/toolCallId": tool_call_id,
        }
        message = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": tool, "arguments": arguments, "_meta": meta},
        }
        headers = {
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": MCP_VERSION,
            "Mcp-Method": "tools/call",
            "Mcp-Name": tool,
        }
        status, body = await self._post("/mcp", message, headers)
        if not isinstance(body, dict) or "result" not in body:
            code = (body.get("error") or {}).get("code") if isinstance(body, dict) else None
            return {"outcome": f"jsonrpc_{code}", "reached": False}
        result = body["result"]
        if result.get("isError"):
            return _from_envelope(orjson.loads(result["content"][0]["text"]), status)
        content = result["structuredContent"]
        event = content.get("event") if isinstance(content, dict) else None
        request_id = event.get("request_id") if isinstance(event, dict) else None
        return {"outcome": "ok", "reached": True, "request_id": request_id, "result": content}


def _from_envelope(envelope: Any, status: int) -> dict[str, Any]:
    if not isinstance(envelope, dict) or "ok" not in envelope:
        return {"outcome": f"http_{status}", "reached": None}
    request_id = envelope.get("request_id")
    answer: dict[str, Any] = {"reached": request_id is not None, "request_id": request_id}
    if envelope["ok"]:
        return {**answer, "outcome": "ok", "result": envelope["result"]}
    error = envelope["error"]
    claimed = (error.get("details") or {}).get("outcome")
    return {**answer, "outcome": error["code"], "error": error, "claimed": claimed}


class Agent:
    """One simulated agent: its own tickets, one call at a time."""

    def __init__(
        self,
        name: str,
        recorder: Recorder,
        rng: random.Random,
        *,
        mcp_share: float,
        interval_s: float | None,
        first_at: float,
        clock: Callable[[], float] = time.monotonic,
        slot: int = 0,
        technician_id: str = "tech-1",
    ) -> None:
        self.name = name
        #: This agent's own window of its technician (agents working at once never double-book), in
        #: the future of FakeClock and of the wall clock (soak runs real processes).
        self._window = window(slot, technician_id, first=FUTURE)
        self._recorder = recorder
        self._rng = rng
        self._mcp_share = mcp_share
        self._interval = interval_s
        self._clock = clock
        self._next_at = first_at
        self._count = 0
        self._ticket: str | None = None
        self._state: str | None = None
        self._held = self._followed = False

    async def run(self, until: float) -> None:
        while self._clock() < until:
            tool, arguments = self._next()
            call = await self._deliver(tool, arguments, until)
            if call.ok and call.result is not None:
                self._learn(call.result["ticket"])
            elif self._ticket is not None:
                await self._resync(until)

    def _next(self) -> tuple[str, dict[str, Any]]:
        ticket, state = self._ticket, self._state
        if ticket is None or state not in _NEXT:
            self._ticket = self._state = None
            self._held = self._followed = False
            return "ticket.create", {**COMPLETE_TICKET, "customer_name": f"Agent {self.name}"}
        about = {"ticket_id": ticket}
        if state == "SCHEDULED" and not self._held:
            return "ticket.hold", {**about, "cause": "provider", "reason": "waiting for parts"}
        if state == "ON_SITE" and not self._followed:
            return "customer.follow_up", {**about, "channel": "phone", "outcome": "reached"}
        tool, extra = _NEXT[state]
        if tool == "ticket.schedule":
            extra = self._window
        return tool, {**about, **extra}

    def _learn(self, ticket: dict[str, Any]) -> None:
        if self._ticket is not None and ticket["id"] != self._ticket:
            return
        self._ticket, self._state = ticket["id"], ticket["state"]
        self._held |= self._state == "ON_HOLD"

    async def _deliver(self, tool: str, arguments: dict[str, Any], until: float) -> Call:
        """One operation: the call, re-delivered while its outcome stays open.

        It believes the answers, as a model would: while every answer so far claimed that
        nothing was applied (`details.outcome: none`), it tries again under a NEW
        tool_call_id; once one left the outcome open, only the same id is safe. So a false
        `none` shows in the history as an effect of an operation all of whose answers said
        none (the checker's `false_none`)."""
        self._count += 1
        tool_call_id = f"{self.name}-{self._count}"
        believed_none = True
        for _ in range(REDELIVERIES + 1):
            await self._pace()
            transport = "mcp" if self._rng.random() < self._mcp_share else "rest"
            call = await self._recorder.call(self.name, tool, arguments, tool_call_id, transport)
            if call.acknowledged or self._clock() >= until:
                break
            if call.outcome not in _TRANSIENT and call.outcome not in _OPEN:
                break  # a definite refusal (unexpected here): re-delivering cannot help
            believed_none = believed_none and (call.claimed == "none" or call.reached is False)
            if believed_none:
                self._count += 1
                tool_call_id = f"{self.name}-{self._count}"
            await asyncio.sleep(_backoff(call, self._rng))
        if call.ok and tool == "customer.follow_up":
            self._followed = True
        return call

    async def _resync(self, until: float) -> None:
        """Re-read the ticket until the bridge answers (or time is up)."""
        assert self._ticket is not None
        self._count += 1
        tool_call_id = f"{self.name}-{self._count}"
        while True:
            await self._pace()
            transport = "mcp" if self._rng.random() < self._mcp_share else "rest"
            call = await self._recorder.call(
                self.name, "ticket.get", {"ticket_id": self._ticket}, tool_call_id, transport
            )
            if call.ok and call.result is not None:
                self._learn(call.result["ticket"])
                return
            if self._clock() >= until:
                return
            await asyncio.sleep(_backoff(call, self._rng))

    async def _pace(self) -> None:
        """With an interval, calls start on a fixed schedule (never in a burst to catch up)."""
        if self._interval is None:
            return
        now = self._clock()
        if self._next_at > now:
            await asyncio.sleep(self._next_at - now)
            now = self._next_at
        self._next_at = now + self._interval


FUTURE = datetime(2030, 1, 7, 13, 0, tzinfo=UTC)

#: After a successful step, the next call by state (hold and follow-up are added once).
_NEXT: dict[str, tuple[str, dict[str, Any]]] = {
    "READY_TO_SCHEDULE": ("ticket.schedule", {}),  # the agent's own window
    "SCHEDULED": ("ticket.dispatch", {}),
    "ON_HOLD": ("ticket.resume", {}),
    "DISPATCHED": ("tech.arrive", {}),
    "ON_SITE": ("ticket.cancel", {"reason": "history check: done"}),
}
#: Outcomes that leave open whether the change was applied.
_OPEN = frozenset(
    {"no_answer", "upstream_timeout", "deadline_exceeded", "upstream_error", "internal"}
)


def _backoff(call: Call, rng: random.Random) -> float:
    """Jittered, within the tool error's retry_after_ms (capped at 1 s), else 0.1 s."""
    hinted = (call.error or {}).get("retry_after_ms")
    ceiling = min(hinted / 1000, 1.0) if isinstance(hinted, int) else 0.1
    return rng.uniform(ceiling / 2, ceiling)


async def run_agents(
    http: aiohttp.ClientSession,
    endpoint: Endpoint,
    *,
    agents: int,
    seconds: float,
    seed: int,
    timeout_s: float,
    mcp_share: float = 0.25,
    rate_per_s: float | None = None,
    calls: list[Call] | None = None,
    technician_id: str = "tech-1",
) -> list[Call]:
    """Run `agents` agents for `seconds` (each finishes the call it is in), recording into
    `calls`. With `rate_per_s`, the agents together start about that many calls per second;
    without, each calls again as soon as it has its answer (closed loop)."""
    recorded: list[Call] = [] if calls is None else calls
    recorder = Recorder(http, endpoint, recorded, timeout_s)
    interval = None if rate_per_s is None else agents / rate_per_s
    now = time.monotonic()
    until = now + seconds
    master = random.Random(seed)
    crowd = [
        Agent(
            f"a{seed}x{i}",
            recorder,
            random.Random(master.random()),
            mcp_share=mcp_share,
            interval_s=interval,
            # Paced agents start spread over one interval, not all at once.
            first_at=now + (interval or 0.0) * i / agents,
            # Runs with other seeds may leave tickets booked: their slots differ too.
            slot=(seed % 1000) * agents + i,
            technician_id=technician_id,
        )
        for i in range(agents)
    ]
    await asyncio.gather(*(a.run(until) for a in crowd))
    return recorded
