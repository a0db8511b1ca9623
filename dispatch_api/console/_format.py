"""How values read on a page: durations, SLA countdowns, timestamps, sizes, trace links."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote


def duration(seconds: float | None) -> str:
    """`1d 2h`, `3h 05m`, `4m 10s`; a negative value reads as overdue (`-12m 00s`)."""
    if seconds is None:
        return "—"
    sign = "-" if seconds < 0 else ""
    s = int(abs(seconds))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{sign}{days}d {hours}h"
    if hours:
        return f"{sign}{hours}h {minutes:02d}m"
    return f"{sign}{minutes}m {s:02d}s"


def countdown(remaining_s: float | None, done_at: str | None) -> dict[str, Any]:
    """An SLA target as a cell: met (its time), running (time left) or breached (overdue)."""
    if done_at is not None:
        return {"text": f"met {when(done_at)}", "breached": False}
    if remaining_s is None:
        return {"text": "—", "breached": False}
    if remaining_s < 0:
        return {"text": f"breached {duration(-remaining_s)} ago", "breached": True}
    return {"text": f"in {duration(remaining_s)}", "breached": False}


def when(iso: str | None) -> str:
    """An ISO timestamp as `2026-11-27 09:00:00Z` (UTC; the API's times are UTC)."""
    if not iso:
        return "—"
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%SZ")


def size(n: int | None) -> str:
    if n is None:
        return "—"
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"


def trace_link(template: str | None, trace_id: str | None) -> str | None:
    """The trace UI's URL of `trace_id` (DISPATCH_TRACE_UI_URL), None when either is unset.
    The id is percent-encoded: whatever was recorded cannot change the URL's shape."""
    if template is None or not trace_id:
        return None
    return template.replace("{trace_id}", quote(trace_id, safe=""))


FILTERS = {"duration": duration, "when": when, "size": size}
