"""`make soak` cannot rot: a seconds-long soak runs end to end, faults and history check
included, and writes its results (the RSS and descriptor targets mean little this short)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


async def test_a_short_soak_runs_and_its_history_check_finds_nothing_lost_or_doubled(
    tmp_path: Path,
) -> None:
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bench.soak", "--minutes", "0.1", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode in (0, 1), result.stderr[-2000:]
    report = json.loads((tmp_path / "soak.json").read_text())
    assert report["history"]["violations"] == [], report["history"]
    assert report["history"]["lost"] == report["history"]["doubled"] == 0
    assert report["soak"]["calls"] > 0
    assert report["soak"]["ok"] > 0.9 * report["soak"]["calls"]
    assert report["faults"]["pg_cuts"] >= 1
    assert {"bridge", "api"} == set(report["processes"])
    assert "| effects doubled | 0 | == 0 | yes |" in (tmp_path / "soak.md").read_text()
