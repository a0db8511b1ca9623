"""DispatchClient: dispatch-api over one long-lived aiohttp session, with retries.

Trace context travels by the session's trace config (`telemetry.client_trace_config`),
which opens a client span per try and injects `traceparent`.

Every try of one call carries the same request_id, as `X-Request-ID` and, on mutations, as
`Idempotency-Key`, so a retry after a lost answer is replayed by dispatch-api, never applied
twice.
"""

from __future__ import annotations

import asyncio
import io
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from telemetry import propagate_unrecorded, resend_count

from ._breaker import CircuitBreaker
from ._budget import RetryBudget
from ._errors import (
    ApprovalPending,
    AttemptTimedOut,
    CircuitOpen,
    DeadlineExceeded,
    DispatchError,
    InvalidResponse,
    PoolExhausted,
    ProblemResponse,
    TransportFailure,
)
from ._policy import RetryConfig
from ._retry import Clock, Sleep, run_with_retries


@dataclass(slots=True)
class CallRecord:
    """What the tries of one tool call's dispatch-api calls revealed about its effect, kept
    up to date by `DispatchClient.call` (also when a try is cut short by cancellation)."""

    #: Some try of a mutation may have been committed (see `_errors` for the rules).
    maybe_applied: bool = False
    #: The answer is dispatch-api's stored answer to an earlier call under this request_id
    #: (a re-delivery by the agent); a replay to this call's own retry, after an earlier
    #: try of it may have been applied, is this call's outcome and is not marked.
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who a call is for and the ids it travels under."""

    request_id: str
    correlation_id: str
    tool_name: str
    actor_type: str
    actor_id: str
    actor_role: str
    #: Ask dispatch-api what the mutation would do (`?dry_run=true`, no Idempotency-Key):
    #: nothing is changed, so no try can have been applied.
    dry_run: bool = False
    record: CallRecord = field(default_factory=CallRecord, compare=False, repr=False)
    #: The fields of the log line that reports this call when it ends (its HTTP request's
    #: line), where an attempt observer may put a try's fields instead of writing a line of
    #: its own; None when no such line follows.
    line: dict[str, Any] | None = field(default=None, compare=False, repr=False)


#: Called after every try: (context, attempt number, outcome, seconds the try took), where
#: outcome is "ok" or the error's class name. Logging and metrics hang off this seam.
AttemptObserver = Callable[[CallContext, int, str, float], None]

#: Called before every retry: (context, reason), reason being a bounded label of the
#: failure retried: "http_503", "timeout", "connect", ...
RetryObserver = Callable[[CallContext, str], None]


def retry_reason(exc: DispatchError) -> str:
    if isinstance(exc, ProblemResponse):
        return f"http_{exc.status}"
    if isinstance(exc, AttemptTimedOut):
        return "timeout"
    if isinstance(exc, PoolExhausted):
        return "pool"
    if isinstance(exc, TransportFailure):
        return "connect"
    return "other"


class DispatchClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        token: str,
        retry: RetryConfig,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        observer: AttemptObserver | None = None,
        on_retry: RetryObserver | None = None,
        max_connections: int | None = None,
        untraced: aiohttp.ClientSession | None = None,
    ) -> None:
        """`untraced`: a session without trace configs (sharing `session`'s connector) for
        tries outside a recorded trace: aiohttp runs a trace config's hooks on every request,
        recorded or not, a few per cent of a hop's CPU for nothing; those tries carry
        `traceparent` all the same."""
        self._session = session
        self._untraced = untraced
        self._base = base_url.rstrip("/")
        self._auth = f"Bearer {token}"
        self.retry = retry
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._observer = observer
        self._on_retry = on_retry
        # At most this many requests out at once (the session's pool, sized alike): the rest
        # wait here, within their try's time, holding no request or connection objects.
        self._slots = None if max_connections is None else asyncio.Semaphore(max_connections)
        self.budget = RetryBudget(retry.budget, clock)
        self.breaker = CircuitBreaker(retry.breaker, clock)

    # --- the endpoints the tools use --------------------------------------------------

    async def create_ticket(self, ctx: CallContext, fields: Mapping[str, Any]) -> Any:
        return await self.call(ctx, "POST", "/v1/tickets", json=fields)

    async def get_ticket(self, ctx: CallContext, ticket_id: str) -> Any:
        return await self.call(ctx, "GET", f"/v1/tickets/{_segment(ticket_id)}")

    async def update_ticket(
        self, ctx: CallContext, ticket_id: str, fields: Mapping[str, Any]
    ) -> Any:
        return await self.call(ctx, "PATCH", f"/v1/tickets/{_segment(ticket_id)}", json=fields)

    async def timeline(self, ctx: CallContext, ticket_id: str, params: Mapping[str, str]) -> Any:
        path = f"/v1/tickets/{_segment(ticket_id)}/timeline"
        return await self.call(ctx, "GET", path, params=params)

    async def list_tickets(self, ctx: CallContext, params: list[tuple[str, str]]) -> Any:
        return await self.call(ctx, "GET", "/v1/tickets", params=params)

    async def act(
        self, ctx: CallContext, ticket_id: str, action: str, body: Mapping[str, Any]
    ) -> Any:
        """POST /v1/tickets/{id}/{action}: schedule, dispatch, arrive, complete, hold, resume,
        cancel, contact-attempts, escalations, mitigations, evidence."""
        path = f"/v1/tickets/{_segment(ticket_id)}/{action}"
        return await self.call(ctx, "POST", path, json=body)

    async def ready(self, timeout_s: float = 1.0) -> bool:
        """True when dispatch-api's /readyz answers 200 (no retries: this is a probe)."""
        try:
            async with asyncio.timeout(timeout_s):
                async with self._session.get(self._base + "/readyz") as resp:
                    await resp.read()
                    return resp.status == 200
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False

    # --- the call itself --------------------------------------------------------------

    async def call(
        self,
        ctx: CallContext,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Any = None,
    ) -> Any:
        """One logical call, retried under the tool's policy; returns the decoded 2xx body.

        Raises a `DispatchError`: the last try's error, `DeadlineExceeded` when the deadline
        cut a try short, or `CircuitOpen` without trying; its `maybe_applied` is the whole
        history's (`ctx.record`, which every try updates), its `replayed` the answer's.
        """
        policy = self.retry.for_tool(ctx.tool_name)
        deadline = self._clock() + policy.deadline_s
        body = None if json is None else orjson.dumps(json)
        # A timeout of a try that sent this much may be the body's own cost (see _breaker.py).
        heavy = body is not None and len(body) > self.retry.breaker.heavy_body_bytes
        self.budget.record_call()
        previous: list[DispatchError] = []
        record = ctx.record
        # A GET changes nothing, whatever happens to it: only mutations can be applied.
        mutation = method != "GET" and not ctx.dry_run

        async def attempt(number: int) -> Any:
            if previous and self._on_retry is not None:
                self._on_retry(ctx, retry_reason(previous[-1]))
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise DeadlineExceeded("the call's deadline passed before this try")
            probe = self.breaker.before_call()
            clipped = remaining < policy.per_try_timeout_s
            timeout = min(policy.per_try_timeout_s, remaining)
            started = self._clock()
            outcome = "ok"
            earlier = record.maybe_applied
            record.replayed = False
            try:
                result = await self._send(
                    ctx, method, path, body, params, timeout, number, mutation=mutation
                )
            except AttemptTimedOut as exc:
                outcome = type(exc).__name__
                previous.append(exc)
                self.breaker.record_failure(ctx.actor_id, heavy_timeout=heavy)
                if clipped:
                    raise DeadlineExceeded("the call's deadline passed during a try") from exc
                raise
            except DispatchError as exc:
                outcome = type(exc).__name__
                previous.append(exc)
                if exc.replayed and isinstance(exc, ProblemResponse) and exc.status < 500:
                    # The key's stored outcome is a rejection: under this request_id nothing
                    # was, or ever will be, applied, whatever earlier tries did.
                    record.maybe_applied = False
                else:
                    record.maybe_applied = earlier or (mutation and _may_have_applied(exc))
                # A replay after one of this call's own tries may have been applied is most
                # likely that try's outcome: this call's answer, not an earlier call's.
                exc.replayed = exc.replayed and not earlier
                record.replayed = exc.replayed
                if _counts_against_breaker(exc):
                    self.breaker.record_failure(ctx.actor_id)
                elif isinstance(exc, PoolExhausted):
                    # Nothing reached dispatch-api: no verdict on its health either way.
                    if probe:
                        self.breaker.record_abandoned()
                else:
                    self.breaker.record_success(ctx.actor_id)
                raise
            except BaseException as exc:
                outcome = (
                    "cancelled" if isinstance(exc, asyncio.CancelledError) else type(exc).__name__
                )
                if probe:  # only the probe holds the half-open slot
                    self.breaker.record_abandoned()
                raise
            finally:
                if self._observer is not None:
                    self._observer(ctx, number, outcome, self._clock() - started)
            self.breaker.record_success(ctx.actor_id)
            record.replayed = record.replayed and not earlier  # as for errors, above
            return result

        try:
            return await run_with_retries(
                attempt,
                policy=policy,
                budget=self.budget,
                clock=self._clock,
                sleep=self._sleep,
                rng=self._rng,
                deadline=deadline,
            )
        except DispatchError as exc:
            # The raised error is the last try's (or a refusal before any): stamp it with
            # what the whole history says, so no caller reads the effect off one try.
            exc.maybe_applied = record.maybe_applied
            raise

    async def _send(
        self,
        ctx: CallContext,
        method: str,
        path: str,
        body: bytes | None,
        params: Any,
        try_timeout_s: float,
        attempt: int,
        *,
        mutation: bool,
    ) -> Any:
        """One try. `mutation`: whether it may change something once it goes out, which
        it may from the moment it holds a connection slot: until the try proves otherwise
        (and also when it is cancelled mid-way) the call may then have been applied. A try
        cancelled while waiting for a slot sent nothing, and leaves the record as it was."""
        headers = {
            "Authorization": self._auth,
            "X-Request-ID": ctx.request_id,
            "X-Correlation-ID": ctx.correlation_id,
            "X-Actor-Type": ctx.actor_type,
            "X-Actor-Id": ctx.actor_id,
            "X-Actor-Role": ctx.actor_role,
            "X-Tool-Name": ctx.tool_name,
        }
        if method != "GET" and ctx.dry_run:
            params = _with_dry_run(params)
        elif method != "GET":
            headers["Idempotency-Key"] = ctx.request_id
        if body is not None:
            headers["Content-Type"] = "application/json"
        session = self._session
        if self._untraced is not None and propagate_unrecorded(headers):
            session = self._untraced
        token = resend_count.set(attempt - 1)  # read by the client span (http.request.resend_count)
        slots, holding = self._slots, False
        try:
            async with asyncio.timeout(try_timeout_s):
                if slots is not None:
                    await slots.acquire()
                    holding = True
                if mutation:
                    ctx.record.maybe_applied = True
                try:
                    async with session.request(
                        method,
                        self._base + path,
                        data=_payload(body),
                        params=params,
                        headers=headers,
                    ) as resp:
                        raw = await resp.read()
                        status = resp.status
                        retry_after = _retry_after(resp.headers.get("Retry-After"))
                        replayed = resp.headers.get("Idempotent-Replayed", "").lower() == "true"
                finally:
                    if slots is not None and holding:
                        slots.release()
        except TimeoutError as exc:
            if slots is not None and not holding:
                raise PoolExhausted(
                    f"try {attempt}: no connection to dispatch-api came free within"
                    f" {try_timeout_s:.3f}s; the request was not sent"
                ) from exc
            raise AttemptTimedOut(f"try {attempt} took longer than {try_timeout_s:.3f}s") from exc
        except aiohttp.ClientConnectorError as exc:
            # No connection was made (refused, DNS, TLS handshake): the request never left.
            raise TransportFailure(
                f"try {attempt}: {type(exc).__name__}: {exc}", sent=False
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise TransportFailure(f"try {attempt}: {type(exc).__name__}: {exc}") from exc
        finally:
            resend_count.reset(token)
        if 200 <= status < 300:
            try:
                decoded = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError as exc:
                raise InvalidResponse(f"a {status} answer whose body is not JSON") from exc
            if (
                status == 202
                and isinstance(decoded, dict)
                and isinstance(approval := decoded.get("approval"), dict)
            ):
                raise ApprovalPending(approval)
            ctx.record.replayed = replayed
            return decoded
        raise ProblemResponse(status, _problem(raw, status), retry_after, replayed=replayed)


#: A body larger than this is sent from a BytesIO: aiohttp writes that 256 KiB at a time
#: with the loop in between, where it writes bytes in one step (a 7 MB evidence upload held
#: the bridge's loop 9-30 ms for it, and aiohttp warns about it from 1 MiB).
_CHUNKED_WRITE_BYTES = 1024 * 1024


def _payload(body: bytes | None) -> bytes | io.BytesIO | None:
    """What one try sends: a fresh BytesIO for a large body (aiohttp closes it once sent,
    so a retry needs its own), the bytes themselves otherwise."""
    if body is not None and len(body) > _CHUNKED_WRITE_BYTES:
        return io.BytesIO(body)
    return body


def _with_dry_run(params: Any) -> Any:
    if params is None:
        return {"dry_run": "true"}
    if isinstance(params, Mapping):
        return {**params, "dry_run": "true"}
    return [*params, ("dry_run", "true")]


def _may_have_applied(exc: DispatchError) -> bool:
    """Whether the try that failed with `exc` may have been committed by dispatch-api.

    Unknown unless provably not: dispatch-api answers 4xx only for a request it rolled back
    (business rejections commit a timeline event, never the change), but a 5xx can follow a
    commit (503 `database_unavailable` when the COMMIT's acknowledgement is lost), and a
    409 `request_in_progress` means another request under this key may still commit.
    """
    if isinstance(exc, ProblemResponse):
        return exc.status >= 500 or exc.code == "request_in_progress"
    if isinstance(exc, ApprovalPending):  # held for approval: nothing ran
        return False
    if isinstance(exc, TransportFailure):
        return exc.sent
    return not isinstance(exc, CircuitOpen)


def _counts_against_breaker(exc: DispatchError) -> bool:
    """A downstream that does not answer, or answers 5xx, is unhealthy; 4xx (429 included)
    is a healthy downstream saying no."""
    if isinstance(exc, ProblemResponse):
        return exc.status >= 500
    if isinstance(exc, PoolExhausted):  # all connections busy: the bridge's queue, not a fault
        return False
    return isinstance(exc, TransportFailure | AttemptTimedOut | InvalidResponse)


def _segment(value: str) -> str:
    return quote(value, safe="")


def _problem(raw: bytes, status: int) -> dict[str, Any]:
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        return parsed
    return {
        "status": status,
        "code": f"http_{status}",
        "detail": raw[:200].decode(errors="replace"),
    }


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None when absent/bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
