"""MCP Tasks for calls held for a person's approval: the approval dispatch-api recorded IS the
task (taskId = approval id), so a task is durable before it is announced and any replica
answers for it; the bridge keeps no task state of its own.

Two revisions:
- 2025-11-25 (experimental core feature): the server declares `capabilities.tasks`, tools
  that may be gated say `execution.taskSupport: "optional"`, and a client asks for a task
  per call with `params.task`; `tasks/get`, `tasks/result` (blocks until terminal),
  `tasks/cancel` (a task already terminal: -32602). A tool result with `isError` ends the
  task `failed`.
- 2026-07-28 (extension `io.modelcontextprotocol/tasks`): a client declares the extension
  in each request's capabilities and the server decides; `tasks/get` inlines the final
  CallToolResult (`completed`, also for an `isError` result: `failed` is only for JSON-RPC
  errors, which a gated call never ends in), `tasks/update` and `tasks/cancel` acknowledge
  with an empty result.
Both: a withdrawn approval is a `cancelled` task; another agent's task is "not found".
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

from dispatch_client import ApprovalPending, CallContext, DispatchError, ProblemResponse
from telemetry import log_context
from tools import Tool, ToolError, from_dispatch_error

from . import _jsonrpc as rpc
from ._agents import Agent
from ._edge import rate_limit
from ._keys import CLIENT, CORRELATION_ID, PIPELINE
from ._pipeline import Outcome

EXTENSION = "io.modelcontextprotocol/tasks"
#: The handshake revision that has tasks (2025-06-18 has none).
LEGACY = "2025-11-25"
MODERN = "2026-07-28"
META_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_RELATED_TASK = "io.modelcontextprotocol/related-task"
IMMEDIATE_RESPONSE = "io.modelcontextprotocol/model-immediate-response"
#: 2026-07-28's error for a client that did not declare the extension on a tasks/* request.
MISSING_CAPABILITY = -32021
#: JSON-RPC server-error code for a tasks/* request over the agent key's rate limit
#: (tools/call answers an isError result instead; tasks/* have no tool result to carry it).
RATE_LIMITED = -32029
#: What the server offers (2025-11-25 `capabilities.tasks`): no tasks/list, so no caller
#: can ever enumerate task ids.
LEGACY_CAPABILITY: dict[str, Any] = {"cancel": {}, "requests": {"tools": {"call": {}}}}
METHODS = frozenset({"tasks/get", "tasks/result", "tasks/cancel", "tasks/update"})
#: Each revision's methods: tasks/result is 2025-11-25's, tasks/update 2026-07-28's.
_METHODS = {
    LEGACY: frozenset({"tasks/get", "tasks/result", "tasks/cancel"}),
    MODERN: frozenset({"tasks/get", "tasks/update", "tasks/cancel"}),
}
#: tasks/result waits for the decision this long at most, looking every RESULT_POLL_S; a
#: still-pending task then answers what a re-sent call would (approval_pending), so no
#: request holds a connection (and a worker) for the hour an approval may take.
RESULT_WAIT_S = 25.0
RESULT_POLL_S = 1.0
_ENDED = {"denied", "expired", "stale", "withdrawn"}

#: Frames an Outcome as the CallToolResult a tools/call answers (bridge/_mcp.py).
Framer = Callable[[Outcome], dict[str, Any]]


def listed(tool: Tool, entry: dict[str, Any], version: str) -> dict[str, Any]:
    """A tools/list entry with `execution.taskSupport` where a call may be held (2025-11-25;
    2026-07-28 has no per-tool field: the server decides per call)."""
    if version == LEGACY and tool.may_need_approval:
        return {**entry, "execution": {"taskSupport": "optional"}}
    return entry


def wants_task(tool: Tool, params: dict[str, Any], version: str) -> bool:
    """Whether this tools/call may be answered with a task. RpcError -32601 when a
    2025-11-25 client asks for a task on a tool that never offers one (spec)."""
    if version == MODERN:
        return declared(params)
    if version == LEGACY and "task" in params:
        if not tool.may_need_approval:
            raise rpc.RpcError(
                rpc.METHOD_NOT_FOUND, f"{tool.name} does not support task-augmented calls"
            )
        return isinstance(params["task"], dict)
    return False


def declared(params: dict[str, Any]) -> bool:
    meta = params.get("_meta")
    caps = meta.get(META_CAPABILITIES) if isinstance(meta, dict) else None
    extensions = caps.get("extensions") if isinstance(caps, dict) else None
    return isinstance(extensions, dict) and EXTENSION in extensions


def created(outcome: Outcome, pending: ToolError, version: str) -> dict[str, Any]:
    """The CreateTaskResult of a call dispatch-api answered 202 (`pending`, its
    approval_pending error): the approval, which is the task, is committed."""
    details = pending.details
    view = {
        "id": details["approval_id"],
        "status": "pending",
        "requested_at": details.get("requested_at"),
        "decided_at": None,
    }
    task = _task(view, outcome, version)
    if version == MODERN:
        return {"resultType": "task", **task}
    # 2025-11-25: what a host may hand the model at once while the task waits.
    return {"task": task, "_meta": {IMMEDIATE_RESPONSE: pending.message}}


async def handle(
    request: web.Request, agent: Agent, message: rpc.Message, version: str, frame: Framer
) -> dict[str, Any]:
    """tasks/get, tasks/result, tasks/cancel, tasks/update for `agent`'s own tasks."""
    method = str(message.method)
    if method not in _METHODS.get(version, ()):
        raise rpc.RpcError(rpc.METHOD_NOT_FOUND, f"Method not found: {method}")
    if version == MODERN and not declared(message.params):
        raise rpc.RpcError(
            MISSING_CAPABILITY,
            "Missing required client capability",
            {"requiredCapabilities": {"extensions": {EXTENSION: {}}}},
        )
    limited = rate_limit(request, agent)  # polling tasks/get costs the key like any call
    if limited is not None:
        retry = {"code": limited.code, "retry_after_ms": limited.retry_after_ms}
        raise rpc.RpcError(RATE_LIMITED, limited.message, retry)
    task_id = message.params.get("taskId")
    log_context(request).update(
        actor_type="agent", actor_id=agent.id, role=agent.role, tool_name="approval.status"
    )
    view = await _approval(request, agent, task_id)
    match method:
        case "tasks/get":
            return _detailed(view, version, _outcome(request, view), frame)
        case "tasks/result":
            view = await _settled(request, agent, view)
            result = frame(_outcome(request, view))
            related = {META_RELATED_TASK: {"taskId": view["id"]}}
            return {**result, "_meta": {**result.get("_meta", {}), **related}}
        case "tasks/cancel":
            return await _cancel(request, agent, view, version)
    return {}  # tasks/update: nothing is ever asked of the client, so nothing is outstanding


def _not_found(task_id: Any) -> rpc.RpcError:
    return rpc.RpcError(
        rpc.INVALID_PARAMS, "Failed to retrieve task: Task not found", {"taskId": str(task_id)[:64]}
    )


async def _approval(request: web.Request, agent: Agent, task_id: Any) -> dict[str, Any]:
    """The approval behind `task_id`, read as `agent` through the approval.status tool (its
    role, scope and metrics); anything `agent` did not ask for itself is "not found"."""
    if not isinstance(task_id, str):
        raise _not_found(task_id)
    outcome = await request.app[PIPELINE].invoke(
        agent, "approval.status", {"approval_id": task_id}, None, request[CORRELATION_ID]
    )
    if outcome.error is not None:
        if outcome.error.code in ("not_found", "invalid_arguments"):
            raise _not_found(task_id)
        raise rpc.RpcError(-32603, outcome.error.message, {"code": outcome.error.code})
    view: dict[str, Any] = (outcome.result or {})["approval"]
    # dispatch-api shows a gateway's agent only its own approvals; checked again here, so a
    # task id is never a bearer token for someone else's call.
    requester = view.get("requested_by") or {}
    if requester.get("type") != "agent" or requester.get("id") != agent.id:
        raise _not_found(task_id)
    return view


def _outcome(request: web.Request, view: dict[str, Any]) -> Outcome:
    """What re-sending the held call would answer now (replayed once it ran)."""
    tool = str(view.get("tool"))
    ids = (tool, view.get("request_id"), request[CORRELATION_ID], None)
    status = view.get("status")
    stored = view.get("result")
    if status in ("executed", "approved") and isinstance(stored, dict):
        code, body = stored.get("status"), stored.get("body")
        if isinstance(code, int) and 200 <= code < 300 and isinstance(body, dict):
            return Outcome(*ids, result=body, replayed=True)
        problem = body if isinstance(body, dict) else {}
        # As a re-sent call reads it: the stored refusal, replayed.
        stored_refusal = ProblemResponse(int(code or 500), problem, replayed=True)
        error = from_dispatch_error(stored_refusal, tool)
        return Outcome(*ids, error=error, replayed=True)
    exc: DispatchError
    if status in _ENDED:
        exc = ProblemResponse(409, {"code": f"approval_{status}", "approval": view})
    else:
        exc = ApprovalPending(view)
    return Outcome(*ids, error=from_dispatch_error(exc, tool))


def _status(view: dict[str, Any], outcome: Outcome, version: str) -> str:
    status = view.get("status")
    if status == "pending":
        return "working"
    if status == "withdrawn":
        return "cancelled"
    # 2025-11-25: a tool result with isError ends the task failed; 2026-07-28: completed,
    # with that result inlined (failed is for JSON-RPC errors only).
    return "failed" if version == LEGACY and outcome.error is not None else "completed"


def _task(view: dict[str, Any], outcome: Outcome, version: str) -> dict[str, Any]:
    error = outcome.error
    created_at = view.get("requested_at")
    task: dict[str, Any] = {
        "taskId": view["id"],
        "status": _status(view, outcome, version),
        "statusMessage": error.message if error is not None else _done(view),
        "createdAt": created_at,
        "lastUpdatedAt": view.get("decided_at") or created_at,
    }
    # Approvals are kept, so a task never disappears: unlimited ttl.
    poll = error.retry_after_ms if error is not None and error.code == "approval_pending" else None
    if version == MODERN:
        task["ttlMs"] = None
        if poll is not None:
            task["pollIntervalMs"] = poll
    else:
        task["ttl"] = None
        if poll is not None:
            task["pollInterval"] = poll
    return {k: v for k, v in task.items() if v is not None or k in ("ttl", "ttlMs")}


def _done(view: dict[str, Any]) -> str:
    by = view.get("decided_by") or {}
    return f"Approved by a {by.get('role', 'person')} and done; the result is the call's."


def _detailed(
    view: dict[str, Any], version: str, outcome: Outcome, frame: Framer
) -> dict[str, Any]:
    task = _task(view, outcome, version)
    if version == MODERN and task["status"] == "completed":
        task["result"] = frame(outcome)
    return task


async def _settled(request: web.Request, agent: Agent, view: dict[str, Any]) -> dict[str, Any]:
    """tasks/result (2025-11-25) blocks until the task is terminal: look again until the
    approval is decided, for RESULT_WAIT_S at most."""
    loop = asyncio.get_running_loop()
    until = loop.time() + RESULT_WAIT_S
    while view.get("status") == "pending" and loop.time() < until:
        await asyncio.sleep(RESULT_POLL_S)
        view = await _approval(request, agent, view["id"])
    return view


async def _cancel(
    request: web.Request, agent: Agent, view: dict[str, Any], version: str
) -> dict[str, Any]:
    """Withdraw the approval request: dispatch-api lets only its requester do that."""
    was_pending = view.get("status") == "pending"
    if was_pending:
        ctx = CallContext(
            request_id=str(uuid.uuid4()),
            correlation_id=request[CORRELATION_ID],
            tool_name=str(view.get("tool")),
            actor_type="agent",
            actor_id=agent.id,
            actor_role=agent.role,
        )
        path = f"/v1/approvals/{view['id']}/withdraw"
        try:
            answer = await request.app[CLIENT].call(
                ctx, "POST", path, json={"reason": "withdrawn by the agent (MCP tasks/cancel)"}
            )
            view = answer["approval"]
        except ProblemResponse as exc:
            if exc.status == 404:
                raise _not_found(view["id"]) from None
            decided = exc.problem.get("approval")
            if exc.code != "approval_decided" or not isinstance(decided, dict):
                raise _upstream(exc) from None
            view = decided
        except DispatchError as exc:
            raise _upstream(exc) from None
    if version == MODERN:  # cooperative: acknowledged, the task ends as it ends
        return {}
    if was_pending and view.get("status") == "withdrawn":
        return _task(view, _outcome(request, view), version)
    raise rpc.RpcError(
        rpc.INVALID_PARAMS,
        f"Cannot cancel task: it is already terminal (approval {view.get('status')})",
        {"taskId": view["id"], "status": _status(view, _outcome(request, view), version)},
    )


def _upstream(exc: DispatchError) -> rpc.RpcError:
    error: ToolError = from_dispatch_error(exc, "approval.status")
    return rpc.RpcError(-32603, error.message, {"code": error.code})
