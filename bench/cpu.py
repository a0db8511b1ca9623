"""CPU time of the processes a scenario measures, as every scenario reads it."""

from __future__ import annotations

import psutil


def cpu_seconds(process: psutil.Process, *, tree: bool = False) -> float:
    """User + system CPU seconds of `process` (and, with `tree`, its descendants:
    PostgreSQL runs one backend per connection)."""
    procs = [process, *process.children(recursive=True)] if tree else [process]
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
        if tree:
            # A child that exited took its CPU out of the live processes' sum (a backend
            # whose connection closed mid-measurement made a difference negative); once
            # reaped, the kernel adds it to its parent's children times, counted here.
            total += t.children_user + t.children_system
    return total
