"""MCP transport: Streamable HTTP at POST /mcp, JSON responses only, no session state.

Two eras share one endpoint and one invocation pipeline with REST:
- handshake revisions (2025-06-18, 2025-11-25): `initialize`, then requests carrying the
  `MCP-Protocol-Version` header. No session id is issued, so any replica answers anything.
- the stateless revision (2026-07-28): no handshake; every request names its version and
  capabilities in `params._meta`, mirrored in the `MCP-Protocol-Version`, `Mcp-Method` and
  `Mcp-Name` headers; `server/discover` advertises what we support.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import orjson
from aiohttp import web
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from telemetry import log_context
from tools import HTTP_STATUS, ToolError, mcp_tool

from . import _jsonrpc as rpc
from . import _tasks as tasks
from ._agents import Agent
from ._call_ids import IDEMPOTENCY_KEY, agent_call_id
from ._dry_run import META_DRY_RUN, dry_run_flag
from ._edge import (
    RefusedRequest,
    admission,
    authenticate,
    body_limit,
    read_body,
    require_scope,
    too_large,
)
from ._keys import CORRELATION_ID, ORIGINS, PIPELINE, SETTINGS
from ._pipeline import Outcome

HANDSHAKE_VERSIONS = ("2025-06-18", "2025-11-25")
MODERN_VERSIONS = ("2026-07-28",)
SUPPORTED_VERSIONS = (*HANDSHAKE_VERSIONS, *MODERN_VERSIONS)
#: A client without the header speaks the revision before it was introduced (spec).
DEFAULT_HANDSHAKE_VERSION = "2025-03-26"

META_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
#: An agent may name its call, as `tool_call_id` does on REST, so a re-sent call deduplicates.
META_TOOL_CALL_ID = "dispatch-bridge.dev/toolCallId"
#: Set (true) in a tool result's `_meta` when it is the stored outcome of an earlier call.
META_REPLAYED = "dispatch-bridge.dev/replayed"

SERVER_INFO = {
    "name": "dispatch-bridge",
    "title": "Field-service dispatch tools",
    "version": "0.1.0",
}
INSTRUCTIONS = (
    "Tools for field-service dispatch: open and update tickets, schedule and dispatch"
    " technicians, record arrival, attach evidence and complete jobs. Errors are tool results"
    " with isError and a JSON body whose error.code and error.message say what to do next."
)
CAPABILITIES = {"tools": {"listChanged": False}}
#: Declared (capabilities.extensions) when OAuth is on: unattended agents get their tokens
#: with the client-credentials grant (ext-auth `oauth-client-credentials`).
OAUTH_EXTENSIONS: dict[str, dict[str, Any]] = {
    "io.modelcontextprotocol/oauth-client-credentials": {}
}
#: JSON-RPC error code of a tools/call refused for a missing scope (HTTP 403, step-up).
FORBIDDEN = -32003
#: tools/list depends on the caller's role: cacheable, but never across credentials.
TOOLS_TTL_MS = 60_000
_TRACE_KEYS = ("traceparent", "tracestate", "baggage")
_B64_HEADER = re.compile(r"=\?base64\?(?P<payload>[A-Za-z0-9+/=]*)\?=")

_tracer = trace.get_tracer("bridge")


async def handle(request: web.Request) -> web.Response:
    """POST /mcp."""
    _check_origin(request)
    try:
        agent = await authenticate(request)
    except RefusedRequest as exc:  # two Authorization headers
        return _json(rpc.error(None, rpc.RpcError(rpc.INVALID_REQUEST, exc.message)), 400)
    except ToolError as error:  # WWW-Authenticate: bridge/_resource.py
        body = rpc.error(None, rpc.RpcError(-32001, error.message))
        return _json(body, HTTP_STATUS[error.code])
    try:
        raw = await _read(request)
        message = rpc.parse(raw)
        _check_size(request, message, len(raw))
    except rpc.RpcError as exc:
        return _json(rpc.error(exc.ident, exc), exc.http_status)
    if message.is_notification or message.is_response:
        return web.Response(status=202)
    try:
        version = _version(request, message)
        value = await _dispatch(request, agent, message, version)
    except rpc.RpcError as exc:
        log_context(request)["error_code"] = f"jsonrpc_{exc.code}"
        return _json(rpc.error(message.id, exc), exc.http_status)
    if version in MODERN_VERSIONS:
        value = {"resultType": "complete", **value}  # a task answer says "task"
    return _json(rpc.result(message.id, value), 200)


async def reject_method(request: web.Request) -> web.Response:
    """GET (server-sent stream) and DELETE (session end) are not offered: no sessions.
    Only an authenticated caller learns that (401 problem+json otherwise, like /v1)."""
    await authenticate(request)
    return web.Response(status=405, headers={"Allow": "POST"})


def _json(body: bytes, status: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


def _check_origin(request: web.Request) -> None:
    """DNS-rebinding guard (spec): a browser Origin must be on DISPATCH_MCP_ALLOWED_ORIGINS.
    Never compared with `Host`: a rebinding attacker controls both (bridge/_origins.py)."""
    origins = request.headers.getall("Origin", [])
    if len(origins) > 1 or not request.app[ORIGINS].allows(origins[0] if origins else None):
        raise web.HTTPForbidden(text="Origin not allowed")


async def _read(request: web.Request) -> bytes:
    """The body, bounded in size and declared as JSON (Streamable HTTP: the client POSTs
    application/json; a body declared as anything else is refused, not guessed at).

    Bounded by the largest limit (the tool is named inside): `_check_size` applies the
    message's own limit once it is parsed, before anything is validated or run."""
    try:
        raw = await read_body(request, request.app[SETTINGS].max_body_bytes)
    except RefusedRequest as exc:
        raise _unreadable(exc) from None
    if not raw.strip():
        raise rpc.RpcError(rpc.PARSE_ERROR, "Parse error: the body is empty", http_status=400)
    if request.content_type != "application/json":
        raise rpc.RpcError(
            rpc.INVALID_REQUEST,
            f"Unsupported Media Type: send the message as application/json,"
            f" not {request.content_type}",
            http_status=415,
        )
    return raw


def _unreadable(exc: RefusedRequest, ident: str | int | None = None) -> rpc.RpcError:
    message = f"Request too large: {exc.message}" if exc.status == 413 else exc.message
    return rpc.RpcError(
        rpc.INVALID_REQUEST, message, exc.details or None, http_status=exc.status, ident=ident
    )


def _check_size(request: web.Request, message: rpc.Message, size: int) -> None:
    """Refuse (413) a message over its own limit: the large one for a tools/call of a tool
    that carries content inline, the small one for anything else."""
    tool = None
    if message.method == "tools/call" and isinstance(name := message.params.get("name"), str):
        tool = request.app[PIPELINE].resolve(name)
    limit = body_limit(request.app[SETTINGS], tool)
    if size > limit:
        raise _unreadable(too_large(limit), message.id)


def _version(request: web.Request, message: rpc.Message) -> str:
    """The revision this request speaks, checked against what we support."""
    meta = message.params.get("_meta")
    header = request.headers.get("MCP-Protocol-Version")
    if message.method == "initialize":
        return _negotiate(message.params.get("protocolVersion"))
    if message.method == "server/discover" or (isinstance(meta, dict) and META_VERSION in meta):
        return _modern(request, message, meta)
    version = header or DEFAULT_HANDSHAKE_VERSION
    if version in MODERN_VERSIONS or (header and version not in HANDSHAKE_VERSIONS):
        raise rpc.RpcError(
            rpc.INVALID_REQUEST,
            f"Unsupported MCP-Protocol-Version {version!r}; supported: {list(SUPPORTED_VERSIONS)}",
            http_status=400,
        )
    return version


def _negotiate(requested: Any) -> str:
    """initialize: answer the client's revision when we speak it, else our latest."""
    if isinstance(requested, str) and requested in HANDSHAKE_VERSIONS:
        return requested
    return HANDSHAKE_VERSIONS[-1]


def _modern(request: web.Request, message: rpc.Message, meta: Any) -> str:
    if not isinstance(meta, dict) or META_VERSION not in meta or META_CAPABILITIES not in meta:
        raise rpc.RpcError(
            rpc.INVALID_PARAMS,
            f"params._meta must carry {META_VERSION!r} and {META_CAPABILITIES!r}",
            http_status=400,
        )
    version = meta[META_VERSION]
    if request.headers.get("MCP-Protocol-Version") != version:
        raise _mismatch("MCP-Protocol-Version header does not match params._meta")
    if request.headers.get("Mcp-Method") != message.method:
        raise _mismatch("Mcp-Method header does not match the request's method")
    if message.method == "tools/call":
        name = _decode_header(request.headers.get("Mcp-Name"))
        if name != message.params.get("name"):
            raise _mismatch("Mcp-Name header does not match params.name")
    if message.method in tasks.METHODS:  # the task id routes the request (Tasks extension)
        name = _decode_header(request.headers.get("Mcp-Name"))
        if name != message.params.get("taskId"):
            raise _mismatch("Mcp-Name header does not match params.taskId")
    if not isinstance(version, str):
        raise rpc.RpcError(rpc.INVALID_PARAMS, "protocol version must be a string", http_status=400)
    if version not in MODERN_VERSIONS:
        raise rpc.RpcError(
            rpc.UNSUPPORTED_PROTOCOL_VERSION,
            "Unsupported protocol version",
            {"supported": list(SUPPORTED_VERSIONS), "requested": version[:64]},
            http_status=400,
        )
    return version


def _mismatch(text: str) -> rpc.RpcError:
    return rpc.RpcError(rpc.HEADER_MISMATCH, text, http_status=400)


def _decode_header(value: str | None) -> str | None:
    """Header values outside ASCII travel as `=?base64?...?=` (2026-07-28)."""
    if value is None:
        return None
    match = _B64_HEADER.fullmatch(value)
    if match is None:
        return value
    try:
        return base64.b64decode(match.group("payload"), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


async def _dispatch(
    request: web.Request, agent: Agent, message: rpc.Message, version: str
) -> dict[str, Any]:
    pipeline = request.app[PIPELINE]
    match message.method:
        case "initialize":
            return {
                "protocolVersion": version,
                "capabilities": _capabilities(request, version),
                "serverInfo": SERVER_INFO,
                "instructions": INSTRUCTIONS,
            }
        case "server/discover":
            return {
                "supportedVersions": list(SUPPORTED_VERSIONS),
                "capabilities": _capabilities(request, version),
                "instructions": INSTRUCTIONS,
                "cacheScope": "private",
                "ttlMs": TOOLS_TTL_MS,
                "_meta": {"io.modelcontextprotocol/serverInfo": SERVER_INFO},
            }
        case "ping" if version not in MODERN_VERSIONS:
            return {}
        case "tools/list":
            names = request.app[SETTINGS].listed_names
            listed: dict[str, Any] = {
                "tools": [
                    tasks.listed(t, mcp_tool(t, names), version) for t in pipeline.visible(agent)
                ]
            }
            if version in MODERN_VERSIONS:
                listed.update(ttlMs=TOOLS_TTL_MS, cacheScope="private")
            return listed
        case "tools/call":
            return await _call(request, agent, message, version)
        case method if method in tasks.METHODS:
            return await tasks.handle(request, agent, message, version, _tool_result)
    raise rpc.RpcError(rpc.METHOD_NOT_FOUND, f"Method not found: {message.method}")


def _capabilities(request: web.Request, version: str) -> dict[str, Any]:
    capabilities: dict[str, Any] = dict(CAPABILITIES)
    extensions: dict[str, Any] = {}
    if request.app[SETTINGS].oauth.enabled:
        extensions.update(OAUTH_EXTENSIONS)
    if version in MODERN_VERSIONS:
        extensions[tasks.EXTENSION] = {}
    elif version == tasks.LEGACY:
        capabilities["tasks"] = tasks.LEGACY_CAPABILITY
    if extensions:
        capabilities["extensions"] = extensions
    return capabilities


async def _call(
    request: web.Request, agent: Agent, message: rpc.Message, version: str
) -> dict[str, Any]:
    params = message.params
    name = params.get("name")
    pipeline = request.app[PIPELINE]
    tool = pipeline.resolve(name) if isinstance(name, str) else None
    if tool is None:
        pipeline.count_refusal(str(name)[:128], "unknown_tool")
        names = request.app[SETTINGS].listed_names
        raise rpc.RpcError(
            rpc.INVALID_PARAMS,
            f"Unknown tool: {str(name)[:64]}",
            {"available": [mcp_tool(t, names)["name"] for t in pipeline.visible(agent)]},
        )
    try:
        require_scope(request, agent, tool)
    except ToolError as error:  # 403 with the step-up challenge, as MCP authorization asks
        pipeline.count_refusal(tool.name, error.code)
        raise rpc.RpcError(FORBIDDEN, error.message, error.details, http_status=403) from None
    as_task = tasks.wants_task(tool, params, version)
    raw_meta = params.get("_meta")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    cid = request[CORRELATION_ID]
    limited = admission(request, agent)
    if limited is not None:
        pipeline.count_refusal(tool.name, "rate_limited")
        return _tool_result(Outcome(tool.name, None, cid, None, error=limited))
    try:
        call_id = agent_call_id(
            meta.get(META_TOOL_CALL_ID),
            f"params._meta[{META_TOOL_CALL_ID!r}]",
            request.headers.get(IDEMPOTENCY_KEY),
        )
        dry_run = dry_run_flag(meta.get(META_DRY_RUN), f"params._meta[{META_DRY_RUN!r}]")
    except RefusedRequest as exc:  # as a tool result the model can act on, nothing done
        pipeline.count_refusal(tool.name, "invalid_arguments")
        refused = ToolError("invalid_arguments", exc.message, details=exc.details)
        return _tool_result(Outcome(tool.name, None, cid, None, error=refused))
    # Trace context in _meta continues the caller's trace (as the HTTP header would). Only
    # string values are propagation headers: the propagators raise on anything else.
    carrier = {k: v for k in _TRACE_KEYS if isinstance(v := meta.get(k), str)}
    parent = propagate.extract(carrier) if "traceparent" in carrier else None
    invocation = pipeline.invoke(
        agent,
        tool.name,
        params.get("arguments", {}),
        call_id,
        cid,
        request.content.total_bytes,  # the body that carried the call, for the key's cap
        dry_run,
        log_context(request),
    )
    if parent is None and not trace.get_current_span().is_recording():
        # An unrecorded request span's child is not recorded either (ParentBased): skip it.
        outcome = await invocation
    else:
        # Spans, like logs and metrics, name the tool canonically, whichever spelling was called.
        with _tracer.start_as_current_span(
            f"tools/call {tool.name}",
            context=parent,
            kind=SpanKind.SERVER if parent is not None else SpanKind.INTERNAL,
            attributes={"mcp.method.name": "tools/call", "gen_ai.tool.name": tool.name},
        ):
            outcome = await invocation
    arguments = params.get("arguments")
    log_context(request).update(
        actor_type="agent",
        actor_id=agent.id,
        role=agent.role,
        tool_name=outcome.tool,
        request_id=outcome.request_id,
        ticket_id=arguments.get("ticket_id") if isinstance(arguments, dict) else None,
        error_code=None if outcome.error is None else outcome.error.code,
        **({"dry_run": True} if dry_run else {}),
    )
    if as_task and outcome.error is not None and outcome.error.code == "approval_pending":
        return tasks.created(outcome, outcome.error, version)
    return _tool_result(outcome)


def _tool_result(outcome: Outcome) -> dict[str, Any]:
    """Success: structuredContent plus the same JSON as text. Failure: isError with the REST
    envelope as text, so the model reads the same code, message and details. A replayed
    outcome (either) carries `_meta` {"dispatch-bridge.dev/replayed": true}."""
    if outcome.error is None:
        text = orjson.dumps(outcome.result).decode()
        result: dict[str, Any] = {
            "content": [{"type": "text", "text": text}],
            "structuredContent": outcome.result,
            "isError": False,
        }
    else:
        result = {
            "content": [{"type": "text", "text": orjson.dumps(outcome.envelope()).decode()}],
            "isError": True,
        }
    if outcome.replayed:
        result["_meta"] = {META_REPLAYED: True}
    if outcome.dry_run:
        result["_meta"] = {**result.get("_meta", {}), META_DRY_RUN: True}
    return result
