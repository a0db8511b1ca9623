"""The invocation pipeline both transports share: resolve, authorize, validate, mint the
request_id, call, translate errors. REST and MCP differ only in how they frame the outcome.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from dispatch_client import CallContext, DispatchClient, DispatchError
from telemetry import YIELD_AFTER_BODY_BYTES, current_ids, new_id
from tools import HTTP_STATUS, Tool, ToolError, from_dispatch_error, name_index

from ._agents import Agent
from ._concurrency import AdaptiveLimit
from ._fairness import KeyAdmission
from ._inflight import InFlightCall, InFlightRegistry
from ._metrics import UNKNOWN_TOOL, BridgeMetrics, dry_run_outcome
from ._scopes import permits, scope_of

_log = logging.getLogger("bridge")
_tracer = trace.get_tracer("bridge")

#: Namespace of request_ids derived from an agent's tool_call_id (uuid5).
REQUEST_ID_NAMESPACE = uuid.UUID("5d6b1f0e-6a7c-4f37-9a53-2f0b9a8c1e44")
TOOL_CALL_ID = re.compile(r"[A-Za-z0-9._:@+=-]{1,128}")


@dataclass(frozen=True, slots=True)
class Outcome:
    """One tool call's result or error, with the ids it ran under."""

    tool: str
    request_id: str | None
    correlation_id: str
    trace_id: str | None
    result: dict[str, Any] | None = None
    error: ToolError | None = None
    #: dispatch-api answered from the stored outcome of an earlier request under this call's
    #: request_id (a re-delivery, or the bridge's own retry after a lost answer).
    replayed: bool = False
    #: Asked as a dry run: what the call would do; nothing was changed.
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def http_status(self) -> int:
        return 200 if self.error is None else HTTP_STATUS[self.error.code]

    def envelope(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": self.ok, "tool": self.tool}
        if self.dry_run:
            body["dry_run"] = True
        if self.error is None:
            body["result"] = self.result
        else:
            body["error"] = self.error.to_json()
        body["replayed"] = self.replayed
        body.update(
            request_id=self.request_id, correlation_id=self.correlation_id, trace_id=self.trace_id
        )
        return body


def request_id_for(agent: Agent, tool: Tool, tool_call_id: str | None) -> str:
    """A fresh UUID per call; derived from (agent, tool, tool_call_id) when the agent names
    its call, so a re-delivered call deduplicates at dispatch-api."""
    if tool_call_id is None:
        return new_id()
    return str(uuid.uuid5(REQUEST_ID_NAMESPACE, f"{agent.id}\n{tool.name}\n{tool_call_id}"))


class Pipeline:
    def __init__(
        self,
        tools: Sequence[Tool],
        client: DispatchClient,
        inflight: InFlightRegistry,
        clock: Callable[[], float],
        metrics: BridgeMetrics,
        max_in_flight: int = 256,
        per_key: KeyAdmission | None = None,
        limit: AdaptiveLimit | None = None,
    ) -> None:
        self.tools = tuple(tools)
        self._max_in_flight = max_in_flight
        #: Per-agent-key limits (calls and body bytes in flight); None: only the global cap.
        self._per_key = per_key
        #: Learns from each call's latency how many may run at once (the transports ask
        #: it, through the overload guard, before reading a body); None: not learnt.
        self._limit = limit
        self._in_flight = 0
        # Both spellings of every name (ValueError, stopping start-up, when one is ambiguous).
        canonical = {t.name: t for t in self.tools}
        self._by_name = {s: canonical[n] for s, n in name_index(canonical).items()}
        self._client = client
        self._inflight = inflight
        self._clock = clock
        self._metrics = metrics
        #: Loop time by which calls must end, once draining (None: no bound).
        self._drain_at: float | None = None
        self._bounds: set[asyncio.Timeout] = set()

    def drain(self, within_s: float) -> None:
        """Shutting down: calls still running `within_s` from now end then, each answered
        `deadline_exceeded` (outcome unknown once a try of a mutation went out, else none;
        safe to re-deliver either way), so the agent gets an answer before the server stops
        waiting and cuts the connection."""
        self._drain_at = asyncio.get_running_loop().time() + max(within_s, 0.0)
        for bound in self._bounds:
            bound.reschedule(self._drain_at)

    def visible(self, agent: Agent) -> list[Tool]:
        """The tools `agent` may call (its role and its token's scopes), in catalog order."""
        return [t for t in self.tools if t.allowed(agent.role) and permits(agent, t)]

    def resolve(self, name: str) -> Tool | None:
        return self._by_name.get(name)

    def count_refusal(self, name: str, code: str) -> None:
        """Count a call the transport refused before the pipeline ran (no key, rate limit,
        unreadable body), so tool_invocations_total sees every call."""
        tool = self.resolve(name)
        self._metrics.invoked(tool.name if tool else UNKNOWN_TOOL, code).inc()

    async def invoke(
        self,
        agent: Agent,
        name: str,
        arguments: Any,
        tool_call_id: Any,
        correlation_id: str,
        body_bytes: int = 0,
        dry_run: bool = False,
        line: dict[str, Any] | None = None,
        *,
        held: bool = False,
    ) -> Outcome:
        """Run one tool call for `agent`; never raises: every failure is in the Outcome.

        `body_bytes`: the size of the request body that carried it (for the key's byte cap).
        `dry_run`: ask what it would do (see _dry_run.py); counted apart from real calls.
        `line`: the fields of the log line that will report the call (CallContext.line).
        `held`: the transport holds the call against its key's limits already (hold_key)."""
        started = time.perf_counter()
        tool = self.resolve(name)
        if tool is None:
            error = _unknown_tool(name, self.visible(agent))
            outcome = Outcome(name[:128], None, correlation_id, current_ids()[0], error=error)
        elif (refused := self._refusal(agent, body_bytes, held)) is not None:
            outcome = Outcome(tool.name, None, correlation_id, current_ids()[0], error=refused)
        else:
            self._in_flight += 1
            per_key = self._per_key
            if per_key is not None and held:  # counted since admission; its bytes are due now
                per_key.charge(agent.id, body_bytes)
            elif per_key is not None:
                per_key.enter(agent.id, body_bytes)
            in_flight = self._metrics.running(tool.name)
            in_flight.inc()
            limit = self._limit
            since = 0.0 if limit is None else limit.start()
            try:
                if body_bytes >= YIELD_AFTER_BODY_BYTES:
                    # Its body was just read and parsed in one step (13 ms for 7 MB), and its
                    # validation and forwarding take as long again: let the calls waiting on
                    # the loop run in between, so one upload is not one long stall for them.
                    await asyncio.sleep(0)
                outcome = await self._execute(
                    agent, tool, arguments, tool_call_id, correlation_id, dry_run, line
                )
            finally:
                self._in_flight -= 1
                if limit is not None:
                    limit.end(since)
                if per_key is not None and not held:  # a held call: the transport releases it
                    per_key.leave(agent.id, body_bytes)
                in_flight.dec()
        label = tool.name if tool is not None else UNKNOWN_TOOL
        code = "ok" if outcome.error is None else outcome.error.code
        if dry_run:
            error_code = None if outcome.error is None else code
            self._metrics.dry_runs.labels(label, dry_run_outcome(outcome.result, error_code)).inc()
            return replace(outcome, dry_run=True)
        self._metrics.invoked(label, code).inc()
        self._metrics.latency_of(label).observe((time.perf_counter() - started) * 1000)
        return outcome

    def key_refusal(self, agent: Agent, body_bytes: int) -> ToolError | None:
        """Whether `agent`'s key is over its own limits for a body of `body_bytes`, asked by
        a transport before it reads a body of declared size: a key at its limit is refused
        without the bridge reading (and parsing) yet another large body for nothing."""
        return None if self._per_key is None else self._per_key.refusal(agent.id, body_bytes)

    def hold_key(self, agent: Agent, body_bytes: int) -> None:
        """Count a call of `body_bytes` in flight for `agent`'s key from now, before its
        body is read (call it in the same step as a `key_refusal` that said None; release
        it with `release_key`), so the key's next calls are refused before theirs are read.
        Its bytes are spent from the key's byte rate only when `invoke` starts it."""
        if self._per_key is not None:
            self._per_key.enter(agent.id, body_bytes, charge=False)

    def release_key(self, agent: Agent, body_bytes: int) -> None:
        if self._per_key is not None:
            self._per_key.leave(agent.id, body_bytes)

    def sheds(self, agent: Agent) -> bool:
        """Whether the overload guard's refusal applies to `agent` (see KeyAdmission.sheds);
        without per-key accounting it applies to every key."""
        return self._per_key is None or self._per_key.sheds(agent.id)

    def _refusal(self, agent: Agent, body_bytes: int, held: bool) -> ToolError | None:
        # The key's own limits first: a key over them is told so (its doing, not the
        # bridge's), and its excess never counts against the budget the others share.
        if self._per_key is not None and not held:
            refused = self._per_key.refusal(agent.id, body_bytes)
            if refused is not None:
                return refused
        return self._full() if self._in_flight >= self._max_in_flight else None

    def _full(self) -> ToolError:
        # Refused before any work, so a shed call costs little and the calls admitted keep
        # their latency; the agent is told to come back shortly, with jitter so a crowd of
        # refused agents does not return in step.
        return ToolError(
            "rate_limited",
            f"The bridge is at capacity ({self._max_in_flight} calls in flight); nothing was"
            " done. Retry shortly.",
            retryable=True,
            retry_after_ms=random.randint(50, 250),
            details={"reason": "bridge_at_capacity", "max_in_flight": self._max_in_flight},
        )

    async def _execute(
        self,
        agent: Agent,
        tool: Tool,
        arguments: Any,
        tool_call_id: Any,
        correlation_id: str,
        dry_run: bool = False,
        line: dict[str, Any] | None = None,
    ) -> Outcome:
        if not trace.get_current_span().is_recording():
            # Sampling was decided at the server span: under the ParentBased sampler a child
            # of an unrecorded span is never recorded, so building one would only cost CPU.
            # The trace id still reaches logs and dispatch-api (traceparent) from that span.
            return await self._run(
                agent, tool, arguments, tool_call_id, correlation_id, dry_run, line
            )
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool.name,
        }
        if dry_run:
            attributes["dispatch_bridge.dry_run"] = True
        if isinstance(tool_call_id, str) and TOOL_CALL_ID.fullmatch(tool_call_id):
            attributes["gen_ai.tool.call.id"] = tool_call_id
        with _tracer.start_as_current_span(
            f"execute_tool {tool.name}", kind=SpanKind.INTERNAL, attributes=attributes
        ) as span:
            outcome = await self._run(
                agent, tool, arguments, tool_call_id, correlation_id, dry_run, line
            )
            if outcome.error is not None:
                span.set_attribute("error.type", "tool_error")
                span.set_status(Status(StatusCode.ERROR, outcome.error.code))
            return outcome

    async def _run(
        self,
        agent: Agent,
        tool: Tool,
        arguments: Any,
        tool_call_id: Any,
        correlation_id: str,
        dry_run: bool = False,
        line: dict[str, Any] | None = None,
    ) -> Outcome:
        trace_id = current_ids()[0]
        try:
            if not tool.allowed(agent.role):
                raise ToolError(
                    "forbidden",
                    f"Your role ({agent.role}) may not use {tool.name}. Tools available to"
                    f" you: {', '.join(t.name for t in self.visible(agent))}",
                    details={"role": agent.role, "allowed_roles": sorted(tool.roles)},
                )
            if not permits(agent, tool):  # the transports refuse first (with a challenge)
                raise ToolError(
                    "forbidden",
                    f"Your access token lacks the scope {scope_of(tool)} that {tool.name} needs.",
                    details={"required_scope": scope_of(tool)},
                )
            call_id = _check_call_id(tool_call_id)
            if not isinstance(arguments, dict):
                raise ToolError(
                    "invalid_arguments",
                    f"arguments must be a JSON object, got {type(arguments).__name__}",
                    details={"errors": [{"path": "", "expected": "object"}]},
                )
            tool.validator.validate(arguments)
        except ToolError as error:
            return Outcome(tool.name, None, correlation_id, trace_id, error=error)
        request_id = request_id_for(agent, tool, call_id)
        args = {k: v for k, v in arguments.items() if v is not None}
        ctx = CallContext(
            request_id=request_id,
            correlation_id=correlation_id,
            tool_name=tool.name,
            actor_type="agent",
            actor_id=agent.id,
            actor_role=agent.role,
            dry_run=dry_run,
            line=line,
        )
        token = self._inflight.start(
            InFlightCall(
                request_id,
                tool.name,
                args.get("ticket_id"),
                agent.id,
                agent.role,
                correlation_id,
                trace_id,
                self._clock(),
            )
        )
        bound = asyncio.timeout_at(self._drain_at)
        self._bounds.add(bound)
        try:
            async with bound:
                result = await tool.handler(self._client, ctx, dict(args))
            replayed = ctx.record.replayed
            return Outcome(tool.name, request_id, correlation_id, trace_id, result, None, replayed)
        except Exception as exc:  # every failure becomes a tool error the model can read
            if bound.expired():
                failure, replayed = _drained(ctx.record.maybe_applied), False
            else:
                failure = _tool_error(exc, tool, request_id, ctx.record.maybe_applied)
                replayed = isinstance(exc, DispatchError) and exc.replayed
        finally:
            self._bounds.discard(bound)
            self._inflight.finish(token)
        return Outcome(tool.name, request_id, correlation_id, trace_id, None, failure, replayed)


def _drained(maybe_applied: bool) -> ToolError:
    """The drain cut the call: its outcome is unknown once a try of a mutation went out."""
    if maybe_applied:
        effect = (
            " The change may or may not have been applied: retry the same call with the same"
            " tool_call_id, it will not be applied twice."
        )
    else:
        effect = " Nothing was changed: retry the call."
    return ToolError(
        "deadline_exceeded",
        "The bridge is shutting down and this call could not finish in time." + effect,
        retryable=True,
        retry_after_ms=1000,
        details={"reason": "bridge_draining"},
        outcome="unknown" if maybe_applied else "none",
    )


def _tool_error(exc: Exception, tool: Tool, request_id: str, maybe_applied: bool) -> ToolError:
    if isinstance(exc, DispatchError):
        return from_dispatch_error(exc, tool.name)
    # Not dispatch-api's failure, but a try may still have gone out before it: say so.
    outcome: Literal["none", "unknown"] = "unknown" if maybe_applied else "none"
    if isinstance(exc, ToolError):
        return replace(exc, outcome=outcome)
    _log.error("tool %s failed unexpectedly (request_id %s)", tool.name, request_id, exc_info=exc)
    return ToolError(
        "internal", "The bridge failed unexpectedly; it has been logged.", outcome=outcome
    )


def _check_call_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not TOOL_CALL_ID.fullmatch(value):
        raise ToolError(
            "invalid_arguments",
            "tool_call_id must be 1-128 characters of letters, digits and ._:@+=-",
            details={"errors": [{"path": "/tool_call_id", "expected": "a safe id string"}]},
        )
    return value


def _unknown_tool(name: str, visible: list[Tool]) -> ToolError:
    return ToolError(
        "unknown_tool",
        f"There is no tool {name[:64]!r} available to you. Available tools: "
        + ", ".join(t.name for t in visible),
        details={"available": [t.name for t in visible]},
    )
