"""The invocation pipeline both transports share: resolve, authorize, validate, mint the
request_id, call, translate errors. REST and MCP differ only in how they frame the outcome.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dispatch_client import CallContext, DispatchClient, DispatchError
from tools import HTTP_STATUS, Tool, ToolError, from_dispatch_error

from ._agents import Agent
from ._inflight import InFlightCall, InFlightRegistry

_log = logging.getLogger("bridge")

#: Namespace of request_ids derived from an agent's tool_call_id (uuid5).
REQUEST_ID_NAMESPACE = uuid.UUID("5d6b1f0e-6a7c-4f37-9a53-2f0b9a8c1e44")
TOOL_CALL_ID = re.compile(r"[A-Za-z0-9._:@+=-]{1,128}")
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")


@dataclass(frozen=True, slots=True)
class TraceHeaders:
    traceparent: str | None = None
    tracestate: str | None = None

    @property
    def trace_id(self) -> str | None:
        match = TRACEPARENT.fullmatch(self.traceparent or "")
        if match is None or match.group(1) == "0" * 32:
            return None
        return match.group(1)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One tool call's result or error, with the ids it ran under."""

    tool: str
    request_id: str | None
    correlation_id: str
    trace_id: str | None
    result: dict[str, Any] | None = None
    error: ToolError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def http_status(self) -> int:
        return 200 if self.error is None else HTTP_STATUS[self.error.code]

    def envelope(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": self.ok, "tool": self.tool}
        if self.error is None:
            body["result"] = self.result
        else:
            body["error"] = self.error.to_json()
        body.update(
            request_id=self.request_id, correlation_id=self.correlation_id, trace_id=self.trace_id
        )
        return body


def request_id_for(agent: Agent, tool: Tool, tool_call_id: str | None) -> str:
    """A fresh UUID per call; derived from (agent, tool, tool_call_id) when the agent names
    its call, so a re-delivered call deduplicates at dispatch-api."""
    if tool_call_id is None:
        return str(uuid.uuid4())
    return str(uuid.uuid5(REQUEST_ID_NAMESPACE, f"{agent.id}\n{tool.name}\n{tool_call_id}"))


class Pipeline:
    def __init__(
        self,
        tools: Sequence[Tool],
        client: DispatchClient,
        inflight: InFlightRegistry,
        clock: Callable[[], float],
    ) -> None:
        self.tools = tuple(tools)
        self._by_name = {n: t for t in self.tools for n in (t.name, t.alias)}
        self._client = client
        self._inflight = inflight
        self._clock = clock

    def visible(self, agent: Agent) -> list[Tool]:
        """The tools `agent` may call, in catalog order."""
        return [t for t in self.tools if t.allowed(agent.role)]

    def resolve(self, name: str) -> Tool | None:
        return self._by_name.get(name)

    async def invoke(
        self,
        agent: Agent,
        name: str,
        arguments: Any,
        tool_call_id: Any,
        correlation_id: str,
        trace: TraceHeaders,
    ) -> Outcome:
        tool = self.resolve(name)
        label = tool.name if tool else name[:128]
        try:
            if tool is None:
                raise _unknown_tool(name, self.visible(agent))
            if not tool.allowed(agent.role):
                raise ToolError(
                    "forbidden",
                    f"Your role ({agent.role}) may not use {tool.name}. Tools available to"
                    f" you: {', '.join(t.name for t in self.visible(agent))}",
                    details={"role": agent.role, "allowed_roles": sorted(tool.roles)},
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
            return Outcome(label, None, correlation_id, trace.trace_id, error=error)
        request_id = request_id_for(agent, tool, call_id)
        args = {k: v for k, v in arguments.items() if v is not None}
        ctx = CallContext(
            request_id=request_id,
            correlation_id=correlation_id,
            tool_name=tool.name,
            actor_type="agent",
            actor_id=agent.id,
            actor_role=agent.role,
            traceparent=trace.traceparent,
            tracestate=trace.tracestate,
        )
        token = self._inflight.start(
            InFlightCall(
                request_id,
                tool.name,
                args.get("ticket_id"),
                agent.id,
                agent.role,
                correlation_id,
                trace.trace_id,
                self._clock(),
            )
        )
        try:
            result = await tool.handler(self._client, ctx, dict(args))
            return Outcome(tool.name, request_id, correlation_id, trace.trace_id, result=result)
        except Exception as exc:  # every failure becomes a tool error the model can read
            failure = _tool_error(exc, tool, request_id)
        finally:
            self._inflight.finish(token)
        return Outcome(tool.name, request_id, correlation_id, trace.trace_id, error=failure)


def _tool_error(exc: Exception, tool: Tool, request_id: str) -> ToolError:
    if isinstance(exc, DispatchError):
        return from_dispatch_error(exc, tool.name)
    if isinstance(exc, ToolError):
        return exc
    _log.error("tool %s failed unexpectedly (request_id %s)", tool.name, request_id, exc_info=exc)
    return ToolError("internal", "The bridge failed unexpectedly; it has been logged.")


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
