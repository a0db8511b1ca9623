"""The README's first screen stays true: `dispatch-bridge up` serves, and the walkthrough runs
exactly as written against it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _walkthrough(marker: str = "walkthrough") -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(
        rf"<!-- {marker}:start -->\s*```bash\n(.*?)```\s*<!-- {marker}:end -->", text, re.S
    )
    assert block, f"README.md lost its {marker} markers"
    return block.group(1)


def _run(script: str, product: dict[str, str]) -> list[str]:
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env={**os.environ, "DISPATCH_DATA_DIR": product["DISPATCH_DATA_DIR"]},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,  # "from the repository root": .venv/bin/dispatch-bridge
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.fixture(scope="module")
def running_product(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`make run`, as the README says, in a process group of its own, on free ports and a
    fresh data dir; its stdout (the services' JSON log lines) goes to `stdout.log`."""
    data_dir = tmp_path_factory.mktemp("product") / ".dispatch"
    env = {
        **os.environ,
        "DISPATCH_DATA_DIR": str(data_dir),
        "DISPATCH_API_PORT": str(_free_port()),
        "DISPATCH_BRIDGE_PORT": str(_free_port()),
    }
    env.pop("DISPATCH_DATABASE_URL", None)
    for inherited in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL"):  # as a user's shell runs it
        env.pop(inherited, None)
    log = data_dir.parent / "stdout.log"
    errors = data_dir.parent / "stderr.log"
    with log.open("w") as out, errors.open("w") as err:
        proc = subprocess.Popen(
            ["make", "run"], cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True
        )
    creds_file = data_dir / "dev-credentials.json"
    try:
        creds = _wait_until_serving(proc, creds_file, errors)
        yield {**creds, "DISPATCH_DATA_DIR": str(data_dir), "stdout": str(log)}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # make and the product it started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_until_serving(
    proc: subprocess.Popen[bytes], creds_file: Path, log: Path
) -> dict[str, str]:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = log.read_text()
            raise AssertionError(f"make run exited with {proc.returncode}:\n{output}")
        if creds_file.exists():
            creds: dict[str, str] = json.loads(creds_file.read_text())
            try:
                with urllib.request.urlopen(creds["api_url"] + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return creds
            except OSError:
                pass
        time.sleep(0.2)
    raise AssertionError("make run did not serve /healthz within 90 s")


def test_up_writes_the_development_credentials(running_product: dict[str, str]) -> None:
    for key in ("api_url", "bridge_url", "agent_key", "api_token"):
        assert running_product[key], key
    creds_file = Path(running_product["DISPATCH_DATA_DIR"]) / "dev-credentials.json"
    assert creds_file.stat().st_mode & 0o077 == 0, "credentials must not be world-readable"


def test_the_readme_walkthrough_runs_as_written(running_product: dict[str, str]) -> None:
    lines = _run(_walkthrough(), running_product)

    assert lines[1:4] == ["SCHEDULED", "DISPATCHED", "ON_SITE"], lines
    rejection = json.loads(lines[4])
    assert rejection["code"] == "evidence_missing"
    assert [m["tag"] for m in rejection["missing_evidence"]] == ["before", "after", "customer"]
    assert lines[5:8] == ["evidence_attached"] * 3
    assert lines[8] == "COMPLETED"
    types = [line.split()[1] for line in lines[9:]]
    assert types == [
        "created",
        "scheduled",
        "dispatched",
        "arrived",
        "completion_rejected",
        "evidence_attached",
        "evidence_attached",
        "evidence_attached",
        "completed",
    ]


def test_the_readme_agent_walkthrough_runs_as_written(running_product: dict[str, str]) -> None:
    lines = _run(_walkthrough("agent-walkthrough"), running_product)

    assert lines[0] == "19 tools"
    assert lines[1:4] == ["SCHEDULED", "DISPATCHED", "ON_SITE"], lines
    envelope = json.loads(lines[4])
    assert envelope["ok"] is False
    assert envelope["tool"] == "tech.complete"
    assert envelope["error"]["code"] == "evidence_missing"
    assert "photo:before, photo:after, signature:customer" in envelope["error"]["message"]


def test_the_readme_approval_walkthrough_runs_as_written(
    running_product: dict[str, str],
) -> None:
    lines = _run(_walkthrough("approval-walkthrough"), running_product)

    assert lines[0] == "approval_pending", lines
    header, row = lines[1], lines[2]  # the one pending approval, this ticket's
    assert header.split()[:4] == ["approval", "status", "ticket", "tool"]
    cells = re.split(r"\s{2,}", row)
    assert cells[1:4] == ["pending", cells[2], "ticket.cancel"]
    assert cells[4:6] == [
        'reason="customer fixed the leak herself"',
        "agent:dev-agent (supervisor)",
    ]
    ticket = cells[2]
    assert lines[3] == (
        f"executed: ticket.cancel on ticket {ticket} ran (HTTP 200, ticket now CANCELLED);"
        " the agent's re-send gets it"
    )
    assert lines[4] == "True CANCELLED"
    story = [line.split()[2] for line in lines[5:]]
    assert story == ["approval_requested", "approval_granted", "cancelled"], lines
    assert "agent:dev-agent (supervisor)" in lines[5]
    assert "human:dev-supervisor (supervisor)" in lines[6]


def test_the_mcp_example_session_runs_against_the_product(
    running_product: dict[str, str],
) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "mcp_agent_session.py")],
        env={**os.environ, "DISPATCH_DATA_DIR": running_product["DISPATCH_DATA_DIR"]},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "tech_complete      isError: evidence_missing" in out  # called by its listed name
    assert out.count("evidence_attach    ok") == 3
    assert "is COMPLETED" in out
    assert re.search(r"5 completion_rejected .* via tech.complete", out)
    assert re.search(r"9 completed .* via tech.complete", out)


async def test_the_mcp_client_config_snippet_reaches_the_bridge(
    running_product: dict[str, str],
) -> None:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    config = json.loads((ROOT / "examples" / "mcp-client-config.json").read_text())
    server = config["mcpServers"]["dispatch-bridge"]
    assert server["url"] == "http://localhost:8080/mcp"  # what `make run` serves by default
    headers = {
        name: value.replace("${DISPATCH_AGENT_KEY}", running_product["agent_key"])
        for name, value in server["headers"].items()
    }
    # The product under test listens on a free port rather than 8080.
    url = running_product["bridge_url"] + "/mcp"

    async with (
        httpx2.AsyncClient(headers=headers) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        tools = await client.list_tools()

    listed = {tool.name: tool.title for tool in tools.tools}
    assert listed["tech_complete"] == "tech.complete"


def test_every_test_the_guarantees_section_names_exists() -> None:
    """Each promise in "Guarantees" names the tests that prove it: they must exist, so the
    section cannot keep citing a test that was renamed or removed."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Guarantees", 1)[1].split("\n## ", 1)[0]
    cited: list[tuple[str, str | None]] = []
    for row in section.splitlines():
        current = None
        for found in re.finditer(r"`(tests/[\w/]+\.py)?(?:::(test_\w+))?`", row):
            path, name = found.groups()
            current = path or current
            if current is not None and (path or name):
                cited.append((current, name))
    assert len(cited) > 20
    for path, name in cited:
        source = (ROOT / path).read_text()
        assert name is None or f"def {name}(" in source, f"{path}::{name} is not a test"


def test_make_run_writes_only_json_log_lines_to_stdout(running_product: dict[str, str]) -> None:
    """`make run > dispatch.log` feeds the README's and runbooks' jq recipes: no command
    echo from make, no banner, nothing but one JSON object per line."""
    lines = Path(running_product["stdout"]).read_text().splitlines()

    parsed = [json.loads(line) for line in lines]

    assert all(isinstance(line, dict) for line in parsed)
    assert any(line.get("event") == "http_request" for line in parsed)
