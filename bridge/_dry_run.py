"""Dry runs of tool calls: validated and authorized exactly like the real call, then asked
of dispatch-api with `?dry_run=true` (no Idempotency-Key), which answers what the call would
do now and changes nothing.

The flag: REST `"dry_run": true` in the invoke body; MCP `params._meta[META_DRY_RUN]: true`.
A read-only tool changes nothing anyway: its dry run answers as the real call would.
Dry runs are counted by `tool_dry_runs_total{tool,outcome}` (_metrics.py), never in
tool_invocations_total.
"""

from __future__ import annotations

from typing import Any

from ._edge import RefusedRequest

#: The MCP `_meta` key asking for a dry run; also set (true) on a dry run's result.
META_DRY_RUN = "dispatch-bridge.dev/dryRun"


def dry_run_flag(value: Any, where: str) -> bool:
    """The flag as sent at `where` (absent: false); RefusedRequest (400) unless a boolean."""
    if value is None or isinstance(value, bool):
        return bool(value)
    got = type(value).__name__
    raise RefusedRequest(
        400,
        f"{where} must be true or false (JSON boolean), got {got}; nothing was done",
        {"errors": [{"path": where, "expected": "a boolean", "received": got}]},
    )
