"""What both services share to be observable: JSON logs, metrics helpers, tracing, ids.

_logging.py   JsonLog (one JSON line per event, DESIGN section 6 fields), stdlib bridge
_metrics.py   millisecond buckets, route labels, the /metrics response
_tracing.py   provider set-up, server-span middleware, client-span trace config
_ids.py       correlation/request id validation and minting
_redact.py    credentials out of every log line, every logged value bounded
_server.py    the listener: idle/head/body timeouts, connection cap, quiet accept() errors
_reads.py     socket reads of exactly what arrived (no fresh 256 KiB buffer per read)
_tool_health.py  per-tool figures, fleet-wide from Prometheus or from one bridge's /metrics
"""

from ._ids import SAFE_ID, UnsafeId, incoming_id, new_id
from ._logging import (
    FIELDS,
    JsonFormatter,
    JsonLog,
    LogSettings,
    Sink,
    configure_stdlib_logging,
    current_ids,
)
from ._metrics import LATENCY_BUCKETS_MS, UNMATCHED, metrics_response, new_registry, route_label
from ._observe import LOG_CONTEXT, OnResponse, log_context, observe_middleware
from ._reads import ExactReads, exact_read_connector, read_exactly
from ._redact import bounded, redact
from ._server import (
    BODY_TIMEOUT_S,
    YIELD_AFTER_BODY_BYTES,
    BodyTimeout,
    GuardedSite,
    ServerSettings,
    body_deadline,
    connection_cap,
    drop_unread_body,
    quiet_accept_errors,
)
from ._tool_health import (
    NOT_FAILURES,
    ToolHealth,
    ToolHealthError,
    ToolStats,
    tool_health,
)
from ._tracing import (
    EXPORTERS,
    TracingSettings,
    client_trace_config,
    configure_tracing,
    database_span,
    instrument_database,
    propagate_unrecorded,
    resend_count,
    tracer_provider,
    tracing_middleware,
)

__all__ = [
    "BODY_TIMEOUT_S",
    "EXPORTERS",
    "FIELDS",
    "LATENCY_BUCKETS_MS",
    "LOG_CONTEXT",
    "NOT_FAILURES",
    "SAFE_ID",
    "UNMATCHED",
    "YIELD_AFTER_BODY_BYTES",
    "BodyTimeout",
    "ExactReads",
    "GuardedSite",
    "JsonFormatter",
    "JsonLog",
    "LogSettings",
    "OnResponse",
    "ServerSettings",
    "Sink",
    "ToolHealth",
    "ToolHealthError",
    "ToolStats",
    "TracingSettings",
    "UnsafeId",
    "body_deadline",
    "bounded",
    "client_trace_config",
    "configure_stdlib_logging",
    "configure_tracing",
    "connection_cap",
    "current_ids",
    "database_span",
    "drop_unread_body",
    "exact_read_connector",
    "incoming_id",
    "instrument_database",
    "log_context",
    "metrics_response",
    "new_id",
    "new_registry",
    "observe_middleware",
    "propagate_unrecorded",
    "quiet_accept_errors",
    "read_exactly",
    "redact",
    "resend_count",
    "route_label",
    "tool_health",
    "tracer_provider",
    "tracing_middleware",
]
