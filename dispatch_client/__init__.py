"""Async client for dispatch-api: one long-lived session, retries under a policy, one error tree.

Create a `DispatchClient` inside the application's `cleanup_ctx` (after tracing is
instrumented), never at import time.
"""

from ._breaker import BreakerState, CircuitBreaker
from ._budget import RetryBudget
from ._client import (
    AttemptObserver,
    CallContext,
    CallRecord,
    DispatchClient,
    RetryObserver,
    retry_reason,
)
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
from ._policy import (
    BreakerConfig,
    BudgetConfig,
    PolicyError,
    RetryConfig,
    RetryPolicy,
    parse_retry_config,
)
from ._retry import full_jitter

__all__ = [
    "ApprovalPending",
    "AttemptObserver",
    "AttemptTimedOut",
    "BreakerConfig",
    "BreakerState",
    "BudgetConfig",
    "CallContext",
    "CallRecord",
    "CircuitBreaker",
    "CircuitOpen",
    "DeadlineExceeded",
    "DispatchClient",
    "DispatchError",
    "InvalidResponse",
    "PolicyError",
    "PoolExhausted",
    "ProblemResponse",
    "RetryBudget",
    "RetryConfig",
    "RetryObserver",
    "RetryPolicy",
    "TransportFailure",
    "full_jitter",
    "parse_retry_config",
    "retry_reason",
]
