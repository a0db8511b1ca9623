"""`dispatch-bridge up` for a newcomer: `make run CONFIG=...`, agents of DISPATCH_AGENT_KEYS,
a second or failed `up` that leaves the running instance's credentials alone, and `migrate` /
`create-principal` that find the data dir's embedded database instead of a throwaway one."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dispatch_api.store import connect, technicians
from dispatch_bridge._devcreds import register_dev_technicians
from testkit.console import Browser
from testkit.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).with_name("dispatch-bridge"))
PLANNER_KEY = "planner-key-for-up"


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    """A user's shell: no DISPATCH_* of the test run, no make variables inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    for inherited in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL"):
        env.pop(inherited, None)
    return {**env, "DISPATCH_DATA_DIR": str(data_dir), **extra}


def _get(url: str, secret: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {secret}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`make run CONFIG=up.toml` with one more agent in DISPATCH_AGENT_KEYS, on free ports."""
    folder = tmp_path_factory.mktemp("up")
    data_dir = folder / ".dispatch"
    config = folder / "up.toml"
    config.write_text('[logging]\nlevel = "info"\n\n[bridge]\nrate_limit_burst = 7\n')
    planner_sha = hashlib.sha256(PLANNER_KEY.encode()).hexdigest()
    env = _env(
        data_dir,
        DISPATCH_API_PORT=str(free_port()),
        DISPATCH_BRIDGE_PORT=str(free_port()),
        DISPATCH_AGENT_KEYS=f"planner:dispatcher:{planner_sha}",
    )
    stderr = folder / "stderr.log"
    with (folder / "stdout.log").open("w") as out, stderr.open("w") as err:
        proc = subprocess.Popen(
            ["make", "run", f"CONFIG={config}"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    creds_file = data_dir / "dev-credentials.json"
    try:
        deadline = time.monotonic() + 90
        while not creds_file.exists():
            assert proc.poll() is None, f"make run exited:\n{stderr.read_text()}"
            assert time.monotonic() < deadline, "make run wrote no credentials within 90 s"
            time.sleep(0.1)
        creds = json.loads(creds_file.read_text())
        yield {"env": env, "creds": creds, "creds_file": creds_file, "stderr": stderr}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_credentials_are_written_once_both_services_listen(product: dict[str, Any]) -> None:
    creds = product["creds"]

    # The file exists only once both answer, so a reader of it never finds a dead address.
    assert _get(creds["api_url"] + "/v1/tickets", creds["api_token"])[0] == 200
    assert _get(creds["bridge_url"] + "/v1/tools", creds["agent_key"])[0] == 200
    banner = product["stderr"].read_text()
    assert "Ctrl-C stops." in banner
    console = f"{creds['api_url']}/console/"
    assert f"console       {console}" in banner
    with urllib.request.urlopen(console + "sign-in", timeout=10) as resp:
        assert resp.status == 200  # the banner's address serves the console


async def test_up_points_the_consoles_tool_page_at_its_own_bridge(
    product: dict[str, Any],
) -> None:
    creds = product["creds"]
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(base_url=creds["api_url"], cookie_jar=jar) as session:
        person = Browser(session)
        assert (await person.sign_in(creds["api_token"])).status == 303
        page = await person.get("/console/tools")

    assert page.status == 200
    assert f"Source: one replica: {creds['bridge_url']}/metrics" in page.text


def test_make_run_takes_a_config_file(product: dict[str, Any]) -> None:
    creds = product["creds"]

    status, body = _get(creds["bridge_url"] + "/v1/config", creds["agent_key"])

    assert status == 200
    assert body["rate_limit"]["burst"] == 7


def test_up_serves_the_agents_of_dispatch_agent_keys_besides_the_dev_agent(
    product: dict[str, Any],
) -> None:
    creds = product["creds"]

    planner = _get(creds["bridge_url"] + "/v1/tools", PLANNER_KEY)
    dev = _get(creds["bridge_url"] + "/v1/tools", creds["agent_key"])

    assert planner[0] == 200
    assert dev[0] == 200
    assert len(planner[1]["tools"]) < len(dev[1]["tools"])  # a dispatcher, not a supervisor


def test_up_seeds_two_active_technicians_skilled_for_every_incident_template(
    product: dict[str, Any],
) -> None:
    creds = product["creds"]

    status, page = _get(creds["api_url"] + "/v1/technicians?active=true", creds["api_token"])
    _, listing = _get(creds["api_url"] + "/v1/templates", creds["api_token"])

    assert status == 200
    assert [t["id"] for t in page["items"]] == ["tech-dev-1", "tech-dev-2"]
    names = {t["name"] for t in listing["templates"]}
    assert names
    assert all(set(t["skills"]) == names for t in page["items"])
    # The walkthrough's technician reads its own record with its own token.
    own = _get(creds["api_url"] + "/v1/technicians/tech-dev-1", creds["technician_token"])
    assert own[0] == 200


async def test_seeding_the_dev_technicians_again_keeps_them_and_an_operators_changes(
    database_url: str,
) -> None:
    await register_dev_technicians(database_url)
    conn = await connect(database_url)
    try:
        await technicians.patch(conn, "tech-dev-2", {"active": False})
        await register_dev_technicians(database_url)
        rows = await conn.fetch("SELECT id, active FROM technicians ORDER BY id")
    finally:
        await conn.close()

    assert [(r["id"], r["active"]) for r in rows] == [("tech-dev-1", True), ("tech-dev-2", False)]


def test_a_second_up_on_a_taken_port_exits_2_and_leaves_the_credentials_alone(
    product: dict[str, Any],
) -> None:
    before = product["creds_file"].read_bytes()
    # Another API port, the same (taken) bridge port: the old `up` rewrote the file with
    # its own api_url before it found the bridge port taken.
    env = {**product["env"], "DISPATCH_API_PORT": str(free_port())}

    done = _cli("up", env=env)

    assert done.returncode == 2, done.stderr
    bridge_port = env["DISPATCH_BRIDGE_PORT"]
    assert f"port {bridge_port} on 127.0.0.1 is already in use" in done.stderr
    assert "DISPATCH_BRIDGE_PORT" in done.stderr
    assert "Ctrl-C stops." not in done.stderr
    assert "Traceback" not in done.stderr
    assert product["creds_file"].read_bytes() == before


def test_an_up_with_a_bad_setting_exits_2_and_leaves_the_credentials_alone(
    product: dict[str, Any],
) -> None:
    before = product["creds_file"].read_bytes()
    env = {
        **product["env"],
        "DISPATCH_API_PORT": str(free_port()),
        "DISPATCH_BRIDGE_PORT": str(free_port()),
        "DISPATCH_AGENT_KEYS": "not-an-agent-spec",
    }

    done = _cli("up", env=env)

    assert done.returncode == 2, done.stderr
    assert "invalid setting: DISPATCH_AGENT_KEYS" in done.stderr
    assert "Ctrl-C stops." not in done.stderr
    assert product["creds_file"].read_bytes() == before


def test_create_principal_without_a_database_url_uses_the_embedded_database_up_runs(
    product: dict[str, Any],
) -> None:
    creds = product["creds"]

    done = _cli("create-principal", "--id", "newcomer", "--role", "dispatcher", env=product["env"])

    assert done.returncode == 0, done.stderr
    token = json.loads(done.stdout)["token"]
    assert _get(creds["api_url"] + "/v1/tickets", token)[0] == 200  # valid where it matters
    assert "using the embedded database in" in done.stderr


def test_migrate_without_a_database_url_uses_the_embedded_database_and_leaves_up_running(
    product: dict[str, Any],
) -> None:
    creds = product["creds"]

    done = _cli("migrate", env=product["env"])

    assert done.returncode == 0, done.stderr
    assert done.stdout == "database is up to date\n"
    assert _get(creds["api_url"] + "/v1/tickets", creds["api_token"])[0] == 200


@pytest.mark.parametrize(
    "command", [["migrate"], ["create-principal", "--id", "x", "--role", "dispatcher"]]
)
def test_without_a_database_url_or_an_embedded_database_the_command_exits_2_saying_what_to_do(
    tmp_path: Path, command: list[str]
) -> None:
    data_dir = tmp_path / ".dispatch"

    done = _cli(*command, env=_env(data_dir))

    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "set DISPATCH_DATABASE_URL" in lines[0]
    assert "dispatch-bridge up" in lines[0]
    assert done.stdout == ""  # no token valid nowhere
    assert not (data_dir / "pg").exists()  # no throwaway database either


def test_migrate_starts_the_stopped_embedded_database_works_and_stops_it(tmp_path: Path) -> None:
    data_dir = tmp_path / ".dispatch"
    # An embedded database that exists but does not run (an `up` that was stopped).
    create = (
        "from pathlib import Path; from dispatch_api.store import start_embedded;"
        f" start_embedded(Path({str(data_dir / 'pg')!r}))"
    )
    made = subprocess.run(
        [sys.executable, "-c", create], timeout=120, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    assert not (data_dir / "pg" / "postmaster.pid").exists()

    first = _cli("migrate", env=_env(data_dir))
    again = _cli("migrate", env=_env(data_dir))

    assert first.returncode == 0, first.stderr
    assert "applied migrations: 0001" in first.stderr  # the work was done there, and kept
    assert again.returncode == 0, again.stderr
    assert "applied migrations" not in again.stderr
    assert not (data_dir / "pg" / "postmaster.pid").exists()  # and it was stopped again
