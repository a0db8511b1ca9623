"""REST transport: list tools, invoke one, show the effective config and calls in flight."""

from __future__ import annotations

from functools import partial
from typing import Any

import orjson
from aiohttp import web

from schemas import MAX_JSON_DEPTH, too_deep
from telemetry import current_ids, log_context
from tools import FORMATS, HTTP_STATUS, MAX_ERRORS, ToolError, mcp_tool

from ._agents import Agent
from ._call_ids import IDEMPOTENCY_KEY, agent_call_id
from ._dry_run import dry_run_flag
from ._edge import (
    RefusedRequest,
    admission,
    authenticate,
    body_limit,
    read_body,
    require_scope,
)
from ._keys import AGENT, CORRELATION_ID, INFLIGHT, PIPELINE, SETTINGS
from ._pipeline import Outcome


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def problem(error: ToolError, status: int | None = None) -> web.Response:
    """A non-invoke error as problem+json, carrying the same code and hints as the envelope."""
    status = status or HTTP_STATUS[error.code]
    body = {
        "type": f"https://dispatch-bridge.dev/problems/{error.code}",
        "title": error.code.replace("_", " ").capitalize(),
        "status": status,
        "detail": error.message,
        "code": error.code,
        "retryable": error.retryable,
        "retry_after_ms": error.retry_after_ms,
        **error.details,
    }
    headers = _retry_headers(error)
    if error.code == "unauthenticated":
        headers["WWW-Authenticate"] = 'Bearer realm="dispatch-bridge"'
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/problem+json",
        headers=headers,
    )


def _retry_headers(error: ToolError) -> dict[str, str]:
    if error.retry_after_ms is None:
        return {}
    return {"Retry-After": str(max(1, -(-error.retry_after_ms // 1000)))}


def tool_error(exc: ToolError | RefusedRequest) -> tuple[ToolError, int]:
    """What agents read of a refusal, and its HTTP status: a tool error's status follows
    from its code; a request refused at the edge is `invalid_arguments` with its own."""
    if isinstance(exc, ToolError):
        return exc, HTTP_STATUS[exc.code]
    return ToolError("invalid_arguments", exc.message, details=exc.details), exc.status


async def list_tools(request: web.Request) -> web.Response:
    fmt = request.query.get("format", "mcp")
    render = FORMATS.get(fmt)
    if render is None:
        raise ToolError(
            "invalid_arguments",
            f"format must be one of {', '.join(FORMATS)}",
            details={"errors": [{"path": "format", "expected": "mcp, openai or anthropic"}]},
        )
    if fmt == "mcp":  # as tools/list names them (OpenAI and Anthropic: always safe names)
        render = partial(mcp_tool, names=request.app[SETTINGS].listed_names)
    tools = request.app[PIPELINE].visible(request[AGENT])
    return json_response({"format": fmt, "tools": [render(t) for t in tools]})


async def invoke(request: web.Request) -> web.Response:
    """POST /v1/tools/{name}/invoke: always answers with the envelope."""
    name = request.match_info["name"]
    pipeline = request.app[PIPELINE]
    try:
        agent = await authenticate(request)
        require_scope(request, agent, pipeline.resolve(name))
        limited = admission(request, agent)
        if limited is not None:
            raise limited
    except (ToolError, RefusedRequest) as exc:
        return _refused(request, name, exc)
    # Counted against the key from now, before its body is read: a burst of one key's
    # uploads is refused by `admission`, not read and parsed only to be refused by the
    # pipeline. A chunked body, of unknown size, is counted by the pipeline once read.
    held = request.content_length
    if held is not None:
        pipeline.hold_key(agent, held)
    try:
        return await _invoke(request, agent, name, held is not None)
    finally:
        if held is not None:
            pipeline.release_key(agent, held)


async def _invoke(request: web.Request, agent: Agent, name: str, held: bool) -> web.Response:
    """Read the invocation and run it for `agent` (whose key's limits hold the call
    already when `held`)."""
    pipeline = request.app[PIPELINE]
    try:
        body = await _read_invocation(request, name)
        call_id = agent_call_id(
            body.get("tool_call_id"), "tool_call_id", request.headers.get(IDEMPOTENCY_KEY)
        )
        dry_run = dry_run_flag(body.get("dry_run"), "/dry_run")
    except (ToolError, RefusedRequest) as exc:
        return _refused(request, name, exc)
    arguments = body.get("arguments", {})
    outcome = await pipeline.invoke(
        agent,
        name,
        arguments,
        call_id,
        request[CORRELATION_ID],
        request.content.total_bytes,
        dry_run,
        log_context(request),
        held=held,
    )
    log_context(request).update(
        actor_type="agent",
        actor_id=agent.id,
        role=agent.role,
        tool_name=outcome.tool if pipeline.resolve(name) else None,
        ticket_id=_ticket_of(arguments, outcome),
        error_code=None if outcome.error is None else outcome.error.code,
        **({"dry_run": True} if dry_run else {}),
    )
    return _envelope(outcome, outcome.http_status)


def _refused(request: web.Request, name: str, exc: ToolError | RefusedRequest) -> web.Response:
    """The envelope of a call refused before the pipeline ran, counted as invoked."""
    error, status = tool_error(exc)
    request.app[PIPELINE].count_refusal(name, error.code)
    outcome = Outcome(name[:128], None, request[CORRELATION_ID], current_ids()[0], error=error)
    return _envelope(outcome, status)


def _ticket_of(arguments: Any, outcome: Outcome) -> Any:
    """The ticket a call was about: its argument, or the one it created."""
    if isinstance(arguments, dict) and arguments.get("ticket_id"):
        return arguments["ticket_id"]
    ticket = (outcome.result or {}).get("ticket")
    return ticket.get("id") if isinstance(ticket, dict) else None


def _envelope(outcome: Outcome, status: int) -> web.Response:
    headers = {"X-Correlation-ID": outcome.correlation_id}
    if outcome.request_id:
        headers["X-Request-ID"] = outcome.request_id
    if outcome.error is not None:
        headers.update(_retry_headers(outcome.error))
        if outcome.error.code == "unauthenticated":  # RFC 9110: a 401 names its scheme
            headers["WWW-Authenticate"] = 'Bearer realm="dispatch-bridge"'
    return json_response(outcome.envelope(), status, headers)


async def _read_invocation(request: web.Request, name: str) -> dict[str, Any]:
    """The invocation body; RefusedRequest (400, 413, 415) when it cannot be read as sent,
    ToolError `invalid_arguments` (422) when it is not a valid invocation."""
    limit = body_limit(request.app[SETTINGS], request.app[PIPELINE].resolve(name))
    raw = await read_body(request, limit, continue_held=True)
    if not raw and request.content_type != "application/json":
        return {}  # no body (and none declared): no arguments
    if not raw.strip():
        # Declared, yet empty: not JSON, so not `{}` (which once created empty tickets).
        raise RefusedRequest(400, 'the body is empty; send {"arguments": {...}}')
    if request.content_type != "application/json":
        raise RefusedRequest(  # 415, as dispatch-api and the MCP endpoint answer
            415, f"send the body as application/json, not {request.content_type}"
        )
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ToolError("invalid_arguments", f"the body is not valid JSON: {exc}") from None
    if too_deep(body, text=raw):
        raise ToolError("invalid_arguments", f"the body nests deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(body, dict):
        raise ToolError(
            "invalid_arguments",
            'the body must be an object: {"arguments": {...}, "tool_call_id": "..."}',
        )
    extra = sorted(set(body) - {"arguments", "tool_call_id", "dry_run"})
    if extra:
        # The first few, each cut: a body of 5,000 unknown fields gets a small answer.
        named = [k if len(k) <= 64 else k[:63] + "…" for k in extra[:MAX_ERRORS]]
        raise ToolError(
            "invalid_arguments",
            f"unknown body fields {named}; the body holds only arguments, tool_call_id and dry_run",
            details={
                "errors": [{"path": f"/{k}", "expected": "no such field"} for k in named],
                **({"more_errors": True} if len(extra) > MAX_ERRORS else {}),
            },
        )
    return body


async def show_config(request: web.Request) -> web.Response:
    # The internal dispatch-api address and the roster of agents help an attacker map the
    # deployment; only an operator needs them.
    if request[AGENT].role != "supervisor":
        raise ToolError("forbidden", "The effective configuration is visible to supervisors only.")
    return json_response(request.app[SETTINGS].describe())


async def inflight(request: web.Request) -> web.Response:
    if request[AGENT].role != "supervisor":
        raise ToolError("forbidden", "Calls in flight are visible to supervisors only.")
    calls = request.app[INFLIGHT].snapshot()
    return json_response({"count": len(calls), "calls": calls})
