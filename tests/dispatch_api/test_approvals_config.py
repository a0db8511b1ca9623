"""The `[approvals]` table: loaded by the one configuration loader, refused at start-up
(exit 2) naming the bad rule, and shown by GET /v1/config to supervisors only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dispatch_api.domain import ApprovalPolicy
from dispatch_api.settings import SettingsError
from dispatch_bridge._config import load_config
from testkit.api import Api

CLI = str(Path(sys.executable).with_name("dispatch-bridge"))

POLICY = """
[[approvals.rules]]
name = "p4-hold-free"
tool = "ticket.hold"
decision = "allow"
[approvals.rules.when]
priority = ["P4"]

[[approvals.rules]]
name = "hold"
tool = "ticket.hold"
approvers = ["supervisor"]
expires_after_minutes = 30
"""


def test_the_approvals_table_is_the_policy_dispatch_api_runs(tmp_path: Path) -> None:
    config = tmp_path / "settings.toml"
    config.write_text(POLICY)

    loaded = load_config({}, config).api.approvals

    assert [r.name for r in loaded.rules] == ["p4-hold-free", "hold"]
    assert loaded.rules[0].require is False
    assert loaded.rules[1].expires_after_minutes == 30


def test_a_bad_rule_is_a_settings_error_naming_the_rule_and_the_key(tmp_path: Path) -> None:
    config = tmp_path / "settings.toml"
    config.write_text(POLICY.replace('approvers = ["supervisor"]', 'approvers = ["boss"]'))

    with pytest.raises(SettingsError, match=r"rule 'hold' \(#2\): approvers"):
        load_config({}, config)


def test_a_bad_rule_stops_start_up_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "settings.toml"
    config.write_text(POLICY.replace("expires_after_minutes = 30", "expires_after_minutes = 0"))
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
    assert "rule 'hold' (#2): expires_after_minutes: must be between 1 and 10080" in done.stderr
    assert len(done.stderr) < 500
    assert not (tmp_path / "data").exists()


async def test_get_config_shows_the_effective_policy_to_supervisors_only(api: Api) -> None:
    supervisor = await api.request("GET", "/v1/config", as_="supervisor")
    refused = [
        await api.request("GET", "/v1/config", as_="dispatcher"),
        await api.request("GET", "/v1/config", as_="technician"),
        await api.request("GET", "/v1/config", as_="gateway"),
        await api.request(
            "GET",
            "/v1/config",
            as_="gateway",
            headers={"X-Actor-Type": "human", "X-Actor-Id": "s", "X-Actor-Role": "supervisor"},
        ),
    ]

    assert supervisor.status == 200, supervisor.body
    rules = supervisor.body["approvals"]["rules"]
    assert [(r["name"], r["tool"]) for r in rules] == [
        ("cancel", "ticket.cancel"),
        ("emergency-dispatch", "ticket.dispatch"),
    ]
    assert rules[1]["when"] == {"emergency_bypass": True}
    assert rules[1]["approvers"] == ["supervisor"]
    assert all(len(r["version"]) == 12 for r in rules)
    assert [r.status for r in refused] == [403] * 4
    assert {r.body["code"] for r in refused} == {"forbidden"}


def test_the_readme_approvals_example_is_exactly_the_shipped_policy(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Approvals\n", 1)[1]
    block = section.split("```toml\n", 1)[1].split("```", 1)[0]
    config = tmp_path / "settings.toml"
    config.write_text(block)

    documented = load_config({}, config).api.approvals

    assert documented == ApprovalPolicy.defaults()
    assert documented.to_json() == load_config({}, None).api.approvals.to_json()
