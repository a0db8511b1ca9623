"""Figures and the results table: each figure is a list of per-repetition values, reported
as median (min .. max) against its target."""

from __future__ import annotations

import operator
import os
import platform
import statistics
from collections.abc import Callable, Sequence
from typing import Any

_OPS: dict[str, Callable[[float, float], bool]] = {"<=": operator.le, ">=": operator.ge}

Figure = dict[str, Any]


def machine() -> dict[str, Any]:
    """What a results file says about the machine it was measured on."""
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def figure(
    scenario: str, name: str, values: Sequence[float], target: str, note: str = ""
) -> Figure:
    """`target` is "<= x", ">= x" or "" (reported, no target)."""
    med = statistics.median(values)
    met: bool | None = None
    if target:
        op, bound = target.split()
        met = _OPS[op](med, float(bound))
    return {
        "id": scenario,
        "figure": name,
        "median": round(med, 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
        "n": len(values),
        "target": target,
        "met": met,
        "note": note,
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Benchmarks (`make bench`)",
        "",
        f"Machine: {report['machine']}.",
        "",
        f"Method: {report['method']}.",
        "",
        "Each figure is the median over the repetitions (min .. max); compared sides run"
        " interleaved (A B A B ...) after a warm-up. Ratios, not absolute times. What stands"
        " in the way of each missed target, and the plan: [analysis.md](analysis.md).",
        "",
        "| scenario | figure | median | min .. max | target | met | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in report["scenarios"]:
        met = "" if s["met"] is None else ("yes" if s["met"] else "NO")
        lines.append(
            f"| {s['id']} | {s['figure']} | {s['median']} | {s['min']} .. {s['max']} |"
            f" {s['target'] or '-'} | {met} | {s.get('note', '')} |"
        )
    if report.get("cpu"):
        lines += [
            "",
            "## CPU seconds per process during the run",
            "",
            "| process | CPU s |",
            "|---|---|",
            *(f"| {k} | {v:.2f} |" for k, v in report["cpu"].items()),
        ]
    for title, text in report.get("sections", {}).items():
        lines += ["", f"## {title}", "", text.rstrip()]
    return "\n".join(lines) + "\n"
