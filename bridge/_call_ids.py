"""The agent's call id: the one name of a logical tool call, from which its request_id is
derived, so a call sent again (a new JSON-RPC id, a new HTTP request) deduplicates.

MCP has no idempotency key, so agents name their calls where their stack lets them:
- in the message: REST `tool_call_id`, MCP `_meta["dispatch-bridge.dev/toolCallId"]`;
- in an `Idempotency-Key` HTTP header (IETF draft), which HTTP-level clients, gateways and
  proxies can set without knowing MCP, on REST invoke and on `/mcp` tools/call.

Precedence: the message's own id, then the header. Both may be sent, but only with one
value: two different ids for one call cannot be deduplicated, so the call is refused (400)
and nothing is done.
"""

from __future__ import annotations

from typing import Any

from ._edge import RefusedRequest
from ._pipeline import TOOL_CALL_ID

IDEMPOTENCY_KEY = "Idempotency-Key"


def agent_call_id(own: Any, own_name: str, header: str | None) -> Any:
    """The id to run the call under: `own` (the message's id, called `own_name` in errors)
    when given, else the `Idempotency-Key` header's, else None. `own` is checked later by the
    pipeline, as always. RefusedRequest (400) when the header is not a safe id, or when both
    are given and differ."""
    if header is None:
        return own
    key = _unquoted(header.strip())
    if not TOOL_CALL_ID.fullmatch(key):
        raise RefusedRequest(
            400,
            f"the {IDEMPOTENCY_KEY} header must be 1-128 characters of letters, digits and"
            " ._:@+=- (a UUID is a good choice)",
            {"header": IDEMPOTENCY_KEY},
        )
    if own is not None and own != key:
        raise RefusedRequest(
            400,
            f"{own_name} and the {IDEMPOTENCY_KEY} header name two different calls; send the"
            " call's id once, or the same id in both. Nothing was done.",
            {
                "header": IDEMPOTENCY_KEY,
                "errors": [{"path": own_name, "expected": f"the {IDEMPOTENCY_KEY} value"}],
            },
        )
    return key


def _unquoted(value: str) -> str:
    # The draft defines the header as a structured-field string ("..."); most clients send
    # the bare token (as Stripe documents it). Both name the same call.
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value
