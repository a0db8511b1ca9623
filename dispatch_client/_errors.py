"""The one error tree of dispatch_client.

    DispatchError                  anything that kept a call from its result
    ├── ProblemResponse            dispatch-api answered 4xx/5xx (problem+json parsed)
    ├── ApprovalPending            dispatch-api answered 202: a person must approve it first
    ├── TransportFailure           connect refused, reset, DNS: no answer at all
    │   └── PoolExhausted          no pooled connection came free within the try: never sent
    ├── AttemptTimedOut            one try exceeded the per-try timeout
    ├── InvalidResponse            a 2xx whose body is not JSON: a broken downstream
    ├── DeadlineExceeded           the call's overall deadline ran out
    └── CircuitOpen                the breaker for dispatch-api is open: not even tried

aiohttp and asyncio exceptions are translated in `_client.py`, never passed upward.
`retryable` says whether the retry policy may try again; `retry_after_s` carries the
server's Retry-After (or the breaker's remaining open time).

Every error `DispatchClient.call` raises also says what is known about the call's effect,
from the history of ALL its tries, not the last one alone:

- `maybe_applied`: True when some try of a mutation may have been committed by dispatch-api
  (a timeout or lost connection after the request went out, a 5xx, a 2xx that is not JSON,
  a 409 `request_in_progress` whose holder may still commit). False only when none can
  have been: refused before sending (breaker, deadline, connect refused, DNS), a 4xx, or a
  replayed 4xx (the key's stored outcome is a rejection). Always False for a GET.
- `replayed`: the answer carried `Idempotent-Replayed: true` to a try made before any try of
  this call may have been applied, i.e. it is the stored outcome of an earlier call under
  the same Idempotency-Key (a re-delivery), not a fresh decision. A replay answering this
  call's own retry after a lost answer is this call's outcome and is not marked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: 409 codes that mean "try again shortly", not "this conflicts".
RETRYABLE_CONFLICTS = frozenset({"request_in_progress", "ticket_busy"})
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})


class DispatchError(Exception):
    retryable: bool = False
    retry_after_s: float | None = None
    #: Set by `DispatchClient.call` from the call's whole history (see the module docstring).
    maybe_applied: bool = False
    replayed: bool = False


class ProblemResponse(DispatchError):
    """A non-2xx answer; `problem` is its problem+json body (or a stand-in when not JSON)."""

    def __init__(
        self,
        status: int,
        problem: Mapping[str, Any],
        retry_after_s: float | None = None,
        *,
        replayed: bool = False,
    ) -> None:
        self.status = status
        self.replayed = replayed
        self.problem = dict(problem)
        self.code = str(self.problem.get("code") or f"http_{status}")
        self.retry_after_s = retry_after_s
        self.retryable = status in RETRYABLE_STATUSES or (
            status == 409 and self.code in RETRYABLE_CONFLICTS
        )
        super().__init__(f"dispatch-api answered {status} {self.code}")


class ApprovalPending(DispatchError):
    """dispatch-api answered 202 {"approval": view}: the call is held for a person's
    approval, durably recorded, and nothing ran. A final answer, never retried: re-sending the
    same call (same request_id) later is how the caller learns the decision."""

    def __init__(self, approval: Mapping[str, Any]) -> None:
        self.approval = dict(approval)
        super().__init__(f"approval {self.approval.get('id')} is pending")


class TransportFailure(DispatchError):
    retryable = True

    def __init__(self, *args: object, sent: bool = True) -> None:
        #: False when the failure proves the request never left (connect refused, DNS).
        self.sent = sent
        super().__init__(*args)


class PoolExhausted(TransportFailure):
    """Every pooled connection to dispatch-api stayed busy for the whole try: the request
    never left (`sent` False), and dispatch-api is not known to be unhealthy, so the breaker
    does not count it."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args, sent=False)


class AttemptTimedOut(DispatchError):
    retryable = True


class InvalidResponse(DispatchError):
    pass


class DeadlineExceeded(DispatchError):
    pass


class CircuitOpen(DispatchError):
    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(f"circuit to dispatch-api is open for another {retry_after_s:.1f}s")
