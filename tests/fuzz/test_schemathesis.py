"""Schemathesis against both OpenAPI documents, over real HTTP, with every check it has.

`st run` runs as a separate process, as a user would run it, against the services this test
serves on loopback: the examples, coverage (boundary values, missing and malformed
parameters, wrong methods, missing credentials), fuzzing (positive and negative) and
stateful phases (sequences that follow the documents' links, e.g. POST /v1/tickets then the
ticket's actions). `--checks all` includes: no server error, status codes, content types,
headers and bodies as documented, schema-valid data accepted and schema-violating data
rejected, authentication not ignored, deleted resources gone. tests/fuzz/_schemathesis_hooks.py
says what the documents cannot (fresh idempotency keys, rules beyond the schema).

CI runs a few examples per operation with a fixed seed; `make fuzz` runs many more with a
random one (DISPATCH_FUZZ_EXAMPLES, DISPATCH_FUZZ_SEED).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from testkit.api import Api

from .conftest import Bridge

ROOT = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).with_name("schemathesis.toml")
ST = Path(sys.executable).with_name("st")
EXAMPLES = int(os.environ.get("DISPATCH_FUZZ_EXAMPLES", "10"))
#: Sequences of calls in the stateful phase: a few dozen at least, so links are followed.
STATEFUL_EXAMPLES = max(40, EXAMPLES)
#: A fixed seed keeps CI reproducible; `make fuzz` passes "random".
SEED = os.environ.get("DISPATCH_FUZZ_SEED", "20261127")
#: Generous: a CI run takes well under a minute per service.
TIMEOUT_S = 240 + 2 * EXAMPLES


async def run_schemathesis(base_url: str, bearer: str, workdir: Path) -> str:
    """`st run` against `base_url`/openapi.json; returns its report, asserting it passed."""
    config = workdir / "schemathesis.toml"
    config.write_text(
        CONFIG.read_text() + f"\n[phases.stateful.generation]\nmax-examples = {STATEFUL_EXAMPLES}\n"
    )
    args = [str(ST), "--config-file", str(config), "run", f"{base_url}/openapi.json"]
    args += ["--checks", "all", "--max-examples", str(EXAMPLES), "--max-failures", "20"]
    if SEED != "random":
        args += ["--seed", SEED]
    env = {
        **os.environ,
        "DISPATCH_FUZZ_BEARER": bearer,
        "SCHEMATHESIS_HOOKS": "tests.fuzz._schemathesis_hooks",
        "PYTHONPATH": str(ROOT),
        "NO_COLOR": "1",
    }
    process = await asyncio.create_subprocess_exec(
        *args,
        cwd=workdir,  # its caches and hypothesis files stay out of the repository
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    report = output.decode(errors="replace")
    assert process.returncode == 0, report[-20_000:]
    return report


def phases_passed(report: str) -> dict[str, str]:
    """Each phase's outcome line from the summary, e.g. {"Stateful": "✅ Stateful"}."""
    summary = report.split("Test Phases:", 1)[1].split("\n\n", 1)[0]
    return {line.split()[-1]: line.strip() for line in summary.strip().splitlines()}


def links_covered(report: str) -> int:
    match = re.search(r"API Links:\s+(\d+) covered", report)
    assert match, report[-5000:]
    return int(match.group(1))


async def test_dispatch_api_passes_every_schemathesis_check(api: Api, tmp_path: Path) -> None:
    assert api.session._base_url is not None
    report = await run_schemathesis(str(api.session._base_url), api.tokens["supervisor"], tmp_path)

    assert phases_passed(report) == {
        name: f"✅ {name}" for name in ("Examples", "Coverage", "Fuzzing", "Stateful")
    }, report[-5000:]
    assert links_covered(report) >= 1, report[-5000:]
    # Generated requests got past validation into the system of record.
    assert await api.count("SELECT count(*) FROM tickets") > 0
    assert await api.count("SELECT count(*) FROM timeline_events WHERE type <> 'created'") > 0


async def test_the_bridge_passes_every_schemathesis_check(bridge: Bridge, tmp_path: Path) -> None:
    assert bridge.session._base_url is not None
    base_url = str(bridge.session._base_url)
    report = await run_schemathesis(base_url, bridge.keys["supervisor"], tmp_path)

    assert phases_passed(report) == {
        name: f"✅ {name}" for name in ("Examples", "Coverage", "Fuzzing", "Stateful")
    }, report[-5000:]
    assert links_covered(report) >= 1, report[-5000:]
    # Tool calls went through the bridge into dispatch-api.
    assert await bridge.api.count("SELECT count(*) FROM tickets") > 0
