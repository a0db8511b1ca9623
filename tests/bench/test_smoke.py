"""`make bench` cannot rot: both harnesses run end to end at toy sizes (no targets checked)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


async def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


async def test_the_side_by_side_harness_runs_and_writes_its_table(tmp_path: Path) -> None:
    result = await _run("bench.harness", "--requests", "5", "--reps", "1", "--out", str(tmp_path))

    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    ids = {s["id"] for s in report["scenarios"]}
    assert ids >= {"S1", "S2", "S3", "S4", "S5", "S6", "Peer", "Memory", "Alloc", "Noisy"}
    assert all(s["n"] == 1 and s["met"] in (True, False, None) for s in report["scenarios"])
    assert set(report["cpu"]) >= {"api", "bridge", "postgres"}
    table = (tmp_path / "latest.md").read_text()
    assert "| S5 | MCP / REST throughput" in table
    assert "## Bridge profile" in table
    # Each miss's explanation: the floors and profiles beside the figures.
    assert "## Minimal proxy profile" in table
    assert "## dispatch-api profile (S3)" in table
    assert "## Bridge profile at 100 % tracing (S4)" in table
    # The profiles set against their floors' (the observed proxy's, the minimal server's),
    # where py-spy may attach (a container without ptrace rights says so instead).
    assert "## Bridge against the observed proxy (S2)" in table
    assert "## dispatch-api against the minimal server (S3)" in table
    assert "## A refusal: the bridge against the minimal proxy (S6)" in table
    assert "## The bridge at 100 % tracing against the bridge with observability off (S4)" in table
    if "py-spy could not attach" not in table:
        assert "| where | bridge | observed_proxy | more |" in table
        assert "| where | api | minimal server | more |" in table
        assert "| where | bridge | proxy | more |" in table
    assert "minimal aiohttp server (aiohttp closed loop) / raw asyncpg" in table
    assert "OpenTelemetry SDK alone, the same spans recorded and exported" in table
    assert "| S6 | minimal proxy at 80 % of its max: p99 / p50 (floor)" in table
    assert "| S6 | DISPATCH_MAX_LOOP_LAG_MS=5: at 120 %, p50 of shed calls (ms)" in table
    assert "| S1 | minimal proxy added latency p99 (ms), the floor" in table
    assert "| S2 | observed proxy CPU per call (µs), the floor with telemetry" in table
    assert "| S2 | bridge / observed proxy CPU per call" in table
    assert "| S2 | throughput via minimal proxy / dispatch-api alone" in table
    assert "| S1 | bridge / observed proxy added latency p50" in table
    assert "| S6 | minimal proxy CPU per call refused (µs), the floor" in table
    assert "| Noisy | others' p99, noisy key asking first (Expect: 100-continue)" in table
    assert "| Noisy | minimal proxy: others' p99, noisy / quiet run (floor)" in table
    assert "| Noisy | bridge, the floor's paced uploads: others' p99, noisy / quiet run" in table
    figures = {s["figure"]: s for s in report["scenarios"] if s["id"] == "Noisy"}
    assert figures["minimal proxy: uploads stored per s"]["median"] > 0  # the floor uploaded
    refusals = {s["figure"]: s for s in report["scenarios"] if s["id"] == "S6"}
    assert refusals["bridge CPU per call refused at admission (µs)"]["median"] > 0


async def test_the_scale_harness_runs_and_writes_its_table(tmp_path: Path) -> None:
    result = await _run("bench.scale", "--tickets", "2000", "--out", str(tmp_path))

    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "scale.json").read_text())
    assert report["tickets"] == 2000
    assert report["timeline_events"] == 20000
    assert set(report["scenarios"]) == {
        "timeline",
        "queue_page",
        "metrics_scrape",
        "sla_sweep",
        "schedule_check",
        "console_queue",
        "console_queue_filtered",
        "console_ticket",
    }
