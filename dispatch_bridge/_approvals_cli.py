"""Operator commands for approvals: `approvals`, `approve ID`, `deny ID --reason R`.

A person decides what an agent asked to do (contract of issue 18): the decision is made by
dispatch-api (DISPATCH_API_URL + DISPATCH_API_TOKEN, else dev-credentials.json) under the
operator's own token, so the timeline records who approved. A refusal ends the command with
one line and an exit status a script can tell apart:

    1  cannot run (a service down, credentials missing, a bad answer)
    3  403: this token may not decide (not an approver role, a gateway, or the requester)
    4  404: no such approval (or not visible to this token)
    5  409: already decided, expired, or the ticket changed (stale): nothing was done
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from ._ops import (
    MAX_LISTED,
    Endpoints,
    OpsError,
    Page,
    cut_note,
    duration,
    emit,
    gather,
    table,
)

EXIT_FORBIDDEN = 3
EXIT_NOT_FOUND = 4
EXIT_CONFLICT = 5
#: Widest arguments summary in the table; --json has them whole.
SUMMARY_CHARS = 60


class DecisionRefused(OpsError):
    """dispatch-api refused the request for a reason the operator must act on."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


async def _call(
    session: aiohttp.ClientSession,
    ends: Endpoints,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
) -> Any:
    url = ends.api_url + path
    headers = {"Authorization": f"Bearer {ends.api_token}"}
    try:
        async with session.request(
            method, url, headers=headers, json=body if method == "POST" else None
        ) as resp:
            raw = await resp.read()
            status = resp.status
    except aiohttp.ClientError as exc:
        raise OpsError(f"cannot reach {ends.api_url} ({exc})") from None
    try:
        answer = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        answer = {}
    if status >= 400:
        raise _refusal(status, answer if isinstance(answer, dict) else {})
    return answer


def _refusal(status: int, problem: dict[str, Any]) -> OpsError:
    """The operator's one line for a problem answer, naming what to do next."""
    code = problem.get("code")
    detail = problem.get("detail") or code or f"HTTP {status}"
    approval = problem.get("approval") if isinstance(problem.get("approval"), dict) else None
    if status == 403 and code == "self_approval":
        return DecisionRefused(
            f"403 self_approval: {detail} (another person must decide)", EXIT_FORBIDDEN
        )
    if status == 403:
        return DecisionRefused(
            f"403 {code or 'forbidden'}: {detail} (approvals are decided by people whose role"
            " is among the rule's approvers; see `dispatch-bridge approvals`)",
            EXIT_FORBIDDEN,
        )
    if status == 404:
        return DecisionRefused(f"404 {code or 'not_found'}: {detail}", EXIT_NOT_FOUND)
    if status == 409 and approval is not None:
        return DecisionRefused(f"409 {code}: {_conflict(code, approval)}", EXIT_CONFLICT)
    if status == 409:
        return DecisionRefused(f"409 {code}: {detail}", EXIT_CONFLICT)
    return OpsError(f"{status} {detail}")


def _conflict(code: str | None, approval: dict[str, Any]) -> str:
    ticket = approval.get("ticket_id")
    if code == "approval_stale" or approval.get("status") == "stale":
        return (
            f"ticket {ticket} changed since the agent asked (version"
            f" {approval.get('ticket_version')}); nothing was done. See"
            f" `dispatch-bridge why {ticket}`; the agent must look again and ask again."
        )
    if code == "approval_expired" or approval.get("status") == "expired":
        return f"it expired at {approval.get('expires_at')}; nothing was done"
    by = approval.get("decided_by") or {}
    who = f" by {by.get('id')} ({by.get('role')})" if by else ""
    when = f" at {approval['decided_at']}" if approval.get("decided_at") else ""
    reason = f": {approval['reason']}" if approval.get("reason") else ""
    return f"already {approval.get('status')}{who}{when}{reason}"


def _summary(arguments: Any) -> str | None:
    if not isinstance(arguments, dict) or not arguments:
        return None
    text = " ".join(
        f"{key}={orjson.dumps(value).decode()}"
        for key, value in arguments.items()
        if key != "ticket_id"
    )
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"


def _seconds(iso: str | None, now: datetime) -> float | None:
    if not iso:
        return None
    return (datetime.fromisoformat(iso) - now).total_seconds()


def _who(person: Any) -> str | None:
    return f"{person.get('id')} ({person.get('role')})" if isinstance(person, dict) else None


def listing(approvals: list[dict[str, Any]], now: datetime) -> str:
    """The approvals as an aligned table, in the order given (oldest first)."""
    rows = []
    for a in approvals:
        by = a.get("requested_by") or {}
        age = _seconds(a.get("requested_at"), now)
        rows.append(
            [
                a["id"],
                a["status"],
                a.get("ticket_id"),
                a.get("tool"),
                _summary(a.get("arguments")),
                f"{by.get('type')}:{by.get('id')} ({by.get('role')})",
                duration(None if age is None else -age),
                duration(_seconds(a.get("expires_at"), now)) if a["status"] == "pending" else None,
                ",".join(a.get("approvers") or []),
                _who(a.get("decided_by")),
            ]
        )
    headers = [
        "approval",
        "status",
        "ticket",
        "tool",
        "arguments",
        "requested by",
        "age",
        "expires in",
        "approvers",
        "decided by",
    ]
    return table(rows, headers)


async def approvals(ends: Endpoints, status: str, as_json: bool, most: int = MAX_LISTED) -> str:
    """Approvals in `status` (pending by default, `all` for every status), oldest first,
    the first `most` of them."""
    async with aiohttp.ClientSession() as session:

        async def page(cursor: str | None, rows: int) -> Page:
            query = f"limit={rows}" + ("" if status == "all" else f"&status={quote(status)}")
            query += f"&cursor={quote(cursor)}" if cursor else ""
            got = await _call(session, ends, "GET", f"/v1/approvals?{query}")
            return got["items"], got.get("next_cursor")

        found, cut = await gather(page, most)
    if as_json:
        return orjson.dumps(found, option=orjson.OPT_INDENT_2).decode()
    if not found:
        return f"no {'' if status == 'all' else status + ' '}approvals"
    return cut_note(listing(found, datetime.now(UTC)), cut, most, "approvals")


async def decide(
    ends: Endpoints, approval_id: str, decision: str, reason: str | None, as_json: bool
) -> str:
    """Approve (the bound call runs now, once) or deny one approval; its view after."""
    body = {} if reason is None else {"reason": reason}
    path = f"/v1/approvals/{quote(approval_id, safe='')}/{decision}"
    async with aiohttp.ClientSession() as session:
        answer = await _call(session, ends, "POST", path, body)
    approval: dict[str, Any] = answer["approval"]
    if as_json:
        return orjson.dumps(approval, option=orjson.OPT_INDENT_2).decode()
    head = f"{approval['status']}: {approval['tool']} on ticket {approval['ticket_id']}"
    if approval["status"] == "executed":
        result = approval.get("result") or {}
        ticket = (result.get("body") or {}).get("ticket") or {}
        state = f", ticket now {ticket['state']}" if ticket.get("state") else ""
        return f"{head} ran (HTTP {result.get('status')}{state}); the agent's re-send gets it"
    if approval["status"] == "approved":
        result = approval.get("result") or {}
        problem = result.get("body") or {}
        refused = problem.get("code") or problem.get("detail")
        return f"{head} was refused when run (HTTP {result.get('status')} {refused}): no change"
    return f"{head} (reason: {approval.get('reason')})"


def run(command: str, args: Any, env: Mapping[str, str] = os.environ) -> int:
    """Run `approvals`, `approve` or `deny`; print the output, or one line and its exit code."""
    import asyncio

    try:
        ends = Endpoints.from_env(env, ("api",))
        if command == "approvals":
            out = asyncio.run(approvals(ends, args.status, args.json))
        else:
            out = asyncio.run(decide(ends, args.approval_id, command, args.reason, args.json))
    except DecisionRefused as exc:
        print(f"dispatch-bridge {command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except OpsError as exc:
        print(f"dispatch-bridge {command}: {exc}", file=sys.stderr)
        return 1
    emit(out)
    return 0
