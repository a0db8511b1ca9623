"""JSON-RPC 2.0 framing for the MCP transport: parse, classify, answer, and the errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from schemas import MAX_JSON_DEPTH, too_deep

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
HEADER_MISMATCH = -32020  # MCP 2026-07-28
UNSUPPORTED_PROTOCOL_VERSION = -32022  # MCP 2026-07-28

#: Size bounds of a message (as schemas/openapi/bridge.json JsonRpcMessage states them).
MAX_MEMBERS = 32
MAX_ID_CHARS = 256
MAX_METHOD_CHARS = 128
MAX_META_MEMBERS = 64


class RpcError(Exception):
    """A JSON-RPC error answer; `http_status` is what Streamable HTTP asks for. `ident` is
    the id of the request it answers, when parsing got far enough to know it."""

    def __init__(
        self,
        code: int,
        message: str,
        data: Any = None,
        *,
        http_status: int = 200,
        ident: str | int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        self.http_status = http_status
        self.ident = ident


@dataclass(frozen=True, slots=True)
class Message:
    """One incoming JSON-RPC message. `id` is absent for notifications; `is_response` for a
    client's answer to a server request (we send none, so they are acknowledged only)."""

    method: str | None
    params: dict[str, Any]
    id: str | int | None
    is_notification: bool
    is_response: bool


def parse(raw: bytes) -> Message:
    """Raise RpcError (HTTP 400) for anything that is not one valid JSON-RPC 2.0 message."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RpcError(PARSE_ERROR, f"Parse error: {exc}", http_status=400) from None
    if too_deep(body, text=raw):
        raise RpcError(
            PARSE_ERROR, f"Parse error: nested deeper than {MAX_JSON_DEPTH} levels", http_status=400
        )
    if isinstance(body, list):
        raise RpcError(
            INVALID_REQUEST,
            "Invalid Request: batches are not supported; send one JSON-RPC message per POST",
            http_status=400,
        )
    if not isinstance(body, dict):
        raise RpcError(INVALID_REQUEST, "Invalid Request: expected an object", http_status=400)
    if len(body) > MAX_MEMBERS:
        raise RpcError(
            INVALID_REQUEST, f"Invalid Request: more than {MAX_MEMBERS} members", http_status=400
        )
    if body.get("jsonrpc") != "2.0":
        raise RpcError(INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"', http_status=400)
    has_id = "id" in body
    ident = body.get("id")
    if has_id and (isinstance(ident, bool) or not isinstance(ident, str | int)):
        raise RpcError(
            INVALID_REQUEST, "Invalid Request: id must be a string or an integer", http_status=400
        )
    if isinstance(ident, str) and len(ident) > MAX_ID_CHARS:
        raise RpcError(
            INVALID_REQUEST,
            f"Invalid Request: id is longer than {MAX_ID_CHARS} characters",
            http_status=400,
        )
    if "method" not in body:
        if has_id and ("result" in body or "error" in body):
            return Message(None, {}, ident, False, True)
        raise RpcError(INVALID_REQUEST, 'Invalid Request: "method" is missing', http_status=400)
    if "result" in body or "error" in body:
        # A request and a response at once: executing it would let a reply smuggle a call.
        raise RpcError(
            INVALID_REQUEST,
            'Invalid Request: a message carries either "method" or "result"/"error", not both',
            http_status=400,
            ident=ident if has_id else None,
        )
    method = body["method"]
    if not isinstance(method, str) or not method or len(method) > MAX_METHOD_CHARS:
        raise RpcError(
            INVALID_REQUEST,
            f'Invalid Request: "method" must be a string of 1-{MAX_METHOD_CHARS} characters',
            http_status=400,
        )
    params = body.get("params", {})
    if not isinstance(params, dict):
        raise RpcError(
            INVALID_PARAMS,
            "Invalid params: params must be an object",
            http_status=400,
            ident=ident if has_id else None,
        )
    meta = params.get("_meta", {})
    if not isinstance(meta, dict):
        raise RpcError(
            INVALID_PARAMS,
            "Invalid params: params._meta must be an object",
            http_status=400,
            ident=ident if has_id else None,
        )
    if len(params) > MAX_MEMBERS or len(meta) > MAX_META_MEMBERS:
        raise RpcError(
            INVALID_PARAMS,
            f"Invalid params: params holds at most {MAX_MEMBERS} members,"
            f" params._meta at most {MAX_META_MEMBERS}",
            http_status=400,
            ident=ident if has_id else None,
        )
    return Message(method, params, ident if has_id else None, not has_id, False)


def result(ident: str | int | None, value: dict[str, Any]) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": ident, "result": value})


def error(ident: str | int | None, exc: RpcError) -> bytes:
    err: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.data is not None:
        err["data"] = exc.data
    return orjson.dumps({"jsonrpc": "2.0", "id": ident, "error": err})
