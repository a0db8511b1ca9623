"""`--config` (or DISPATCH_CONFIG) with the tables the README documents works for every
command: `[logging]` no longer stops them, and its level is the one logged at."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from testkit.processes import ServiceProcess, free_port

CLI = str(Path(sys.executable).with_name("dispatch-bridge"))


@pytest.mark.parametrize(("level", "request_lines"), [("warning", 0), ("info", 3)])
async def test_serve_api_logs_at_the_level_of_the_logging_table(
    database_url: str, tmp_path: Path, level: str, request_lines: int
) -> None:
    config = tmp_path / "settings.toml"
    config.write_text(f'[logging]\nlevel = "{level}"\n\n[server]\nidle_timeout_s = 30\n')
    port = free_port()
    env = {"DISPATCH_DATABASE_URL": database_url, "DISPATCH_API_PORT": str(port)}
    api = ServiceProcess(
        "dispatch-api", (CLI, "--config", str(config), "serve-api"), env, port, tmp_path
    )

    async with api, aiohttp.ClientSession() as http:
        for _ in range(3):
            async with http.get(api.url + "/v1/tickets") as resp:  # no token: 401, at info
                assert resp.status == 401

    assert len(api.logged("http_request", endpoint="/v1/tickets")) == request_lines


def test_an_unknown_table_is_refused_naming_it_and_the_known_ones(tmp_path: Path) -> None:
    config = tmp_path / "settings.toml"
    config.write_text('[logging]\nlevel = "info"\n\n[loging]\nlevel = "debug"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}

    done = subprocess.run(
        [CLI, "--config", str(config), "migrate"],
        env={**env, "DISPATCH_DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("dispatch-bridge: invalid setting: --config ")
    assert (
        "unknown table [loging]; known tables: agents, approvals, bridge, logging, oauth,"
        in done.stderr
    )
    assert not (tmp_path / "data").exists()


def test_dispatch_config_names_the_file_when_config_is_not_given(tmp_path: Path) -> None:
    config = tmp_path / "settings.toml"
    config.write_text("[server]\nidle_timeot_s = 30\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}

    done = subprocess.run(
        [CLI, "migrate"],
        env={**env, "DISPATCH_CONFIG": str(config), "DISPATCH_DATA_DIR": str(tmp_path / "d")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2, done.stderr
    assert "unknown setting 'idle_timeot_s' in [server]" in done.stderr
