"""Schemathesis hooks for both services, loaded by `st run` through SCHEMATHESIS_HOOKS.

Two things an OpenAPI document cannot say, and that a real client knows:

- Idempotency keys and tool call ids must be new for each new request (and, on a bridge
  call that carries both, equal). Schemathesis draws
  them from a schema, so two different requests often carry the same well-formed key (the
  coverage phase sends "0" everywhere) and are, correctly, refused as a conflict. A
  well-formed key is replaced by a fresh UUID before the call; malformed ones are sent as
  drawn, so their rejection is still tested.
- A dry run (`?dry_run=true`) needs no Idempotency-Key: a case without the key is sent as
  the real call, so the required key is still tested.
- Some schema-valid requests break a rule beyond the schema: an incident type no template
  names, a window that ends before it starts, arguments outside the tool's own input schema,
  a cursor this API did not issue. The configuration lets `positive_data_acceptance` take
  400 and 422, and `refusals_of_valid_data_name_a_rule` narrows that back down: such a
  refusal must carry one of the codes listed here, so a schema-valid request refused for
  any other reason (a document that drifted from the code) still fails the run.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import schemathesis
from hypothesis import strategies as st
from schemathesis import Case, CheckContext, HookContext, Response

#: What dispatch-api takes as an Idempotency-Key (bare or quoted), and the bridge as a call id.
_KEY = re.compile(r'"?[\x21\x23-\x5b\x5d-\x7e]{1,255}"?')
_CALL_ID = re.compile(r"[A-Za-z0-9._:@+=-]{1,128}")

#: dispatch-api codes for rules the document states in prose only.
_API_RULES = {
    400: {"invalid_query"},  # only for the parameters of _QUERY_RULES (checked below)
    422: {
        "unknown_incident_type",  # templates are configuration, not an enum
        "evidence_content_type_not_allowed",  # so is the content-type allow-list
        "sha256_mismatch",
        "evidence_missing",
        "bypass_reason_required",
        # scheduling rules: a window in the past or too long, a technician who is inactive
        # or lacks the incident's skill (the directory is data, not an enum)
        "invalid_window",
        "technician_inactive",
        "technician_lacks_skill",
        "validation_failed",  # only for the cross-field rules below
    },
}
#: Query parameters with rules beyond their schema: an opaque cursor this API did not issue;
#: a skill naming no template (configuration, not an enum); an availability window needs
#: both ends, the end after the start.
_QUERY_RULES = {"cursor", "skill", "available_from", "available_to"}
#: validation_failed messages of rules between fields (or beyond JSON Schema), never of
#: the schema itself.
_CROSS_FIELD_MESSAGES = {
    "must be after window_start",
    "send exactly one of uri or content_base64",
    "evidence referenced by uri needs sha256 and size_bytes",
    "is not valid base64",
    "does not match the uploaded content",
    "must not contain the NUL character (U+0000)",
    "is out of range",
    "name at least one field to change; reason alone changes nothing",
}
#: Bridge tool-call codes: each tool's arguments have a schema of their own (GET /v1/tools),
#: which one OpenAPI operation for every tool cannot carry.
_TOOL_RULES = {422: {"invalid_arguments", "evidence_missing"}}
#: JSON-RPC errors for rules between headers and body (MCP-Protocol-Version, Mcp-Method and
#: Mcp-Name must mirror the message; a revision's required _meta members).
_RPC_RULES = {400: {-32600, -32602, -32020, -32022}}


# Both documents' `format: date-time` is RFC 3339 with years 2000-2099 (schemas/_datetime.py,
# stated in the descriptions); schemathesis' own strategy ranges over years 1-9999, whose
# refusal would be the documented rule, not drift. Generate what the documents promise.
schemathesis.openapi.format(
    "date-time",
    st.datetimes(
        min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30), timezones=st.just(UTC)
    ).map(datetime.isoformat),
)


@schemathesis.hook
def before_call(context: HookContext, case: Case[Any], kwargs: dict[str, Any]) -> None:
    headers = case.headers
    keyless = headers is None or not headers.get("Idempotency-Key")
    if case.query and case.query.get("dry_run") == "true" and keyless:
        # A dry run needs no Idempotency-Key (a rule the document states in prose only:
        # OpenAPI cannot make a header required unless a query parameter is set). A case
        # testing the missing key is a real call, so it is sent as one.
        del case.query["dry_run"]
    if headers is not None:
        key = headers.get("Idempotency-Key")
        if isinstance(key, str) and _KEY.fullmatch(key):
            headers["Idempotency-Key"] = str(uuid.uuid4())
    body = case.body
    if isinstance(body, dict):
        call_id = body.get("tool_call_id")
        if isinstance(call_id, str) and _CALL_ID.fullmatch(call_id):
            body["tool_call_id"] = f"fuzz-{uuid.uuid4()}"
            if headers is not None and "Idempotency-Key" in headers:
                # One call, one id: a client naming its call twice names it the same (two
                # different ids are refused, a rule between header and body).
                headers["Idempotency-Key"] = body["tool_call_id"]


@schemathesis.check
def refusals_of_valid_data_name_a_rule(
    ctx: CheckContext, response: Response, case: Case[Any]
) -> bool | None:
    """A schema-valid request refused with 400 or 422 names a rule beyond the schema."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    if response.status_code not in (400, 422):
        return None
    rule = _rule(response)
    if rule is None or not _allowed(response.status_code, rule):
        raise AssertionError(
            f"schema-valid {case.method} {case.path} refused with {response.status_code} for"
            f" a reason the document does not allow: {response.text[:500]}"
        )
    return None


def _rule(response: Response) -> tuple[str, Any, Any] | None:
    """(kind, code, detail) of a refusal: a problem, a tool envelope or a JSON-RPC error."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    if "jsonrpc" in body and isinstance(body.get("error"), dict):
        return "rpc", body["error"].get("code"), None
    if isinstance(body.get("error"), dict):
        return "tool", body["error"].get("code"), None
    if "code" in body:
        return "problem", body["code"], body
    return None


def _allowed(status: int, rule: tuple[str, Any, Any]) -> bool:
    kind, code, problem = rule
    if kind == "rpc":
        return code in _RPC_RULES.get(status, set())
    if kind == "tool":
        return code in _TOOL_RULES.get(status, set())
    if code not in _API_RULES.get(status, set()):
        return False
    if code == "invalid_query":
        return problem.get("parameter") in _QUERY_RULES
    if code == "validation_failed":
        errors = problem.get("errors") or [{}]
        return all(e.get("message") in _CROSS_FIELD_MESSAGES for e in errors)
    return True
