"""Bridge settings: environment over TOML (`[bridge]`, `[retry]`, `[[agents]]`), checked at
start-up so a bad value stops the bridge with a message naming it; secrets never shown."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from bridge.settings import AgentKey, BridgeSettings, load_bridge_settings
from dispatch_client import BreakerConfig, BudgetConfig, RetryConfig, RetryPolicy
from settings import SettingsError

GATEWAY_TOKEN = "gw-7f3a9c1e-not-for-logs"
PLANNER_SHA = hashlib.sha256(b"planner-key").hexdigest()
FIELD_SHA = hashlib.sha256(b"field-key").hexdigest()
OPS_SHA = hashlib.sha256(b"ops-key").hexdigest()
DISPATCH_BRIDGE = Path(sys.executable).with_name("dispatch-bridge")


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dispatch.toml"
    path.write_text(text)
    return path


def _refusal(env: dict[str, str], config: str | None = None, tmp_path: Path | None = None) -> str:
    path = None if config is None or tmp_path is None else _config(tmp_path, config)
    with pytest.raises(SettingsError) as caught:
        load_bridge_settings(env, path)
    return str(caught.value)


FULL_CONFIG = f"""
[bridge]
host = "0.0.0.0"
port = 9191
api_url = "http://dispatch-api:8081"
rate_limit_per_s = 20.0
rate_limit_burst = 40
drain_timeout_s = 3.5

[retry]
max_attempts = 4
per_try_timeout_s = 1.5
deadline_s = 8

[retry.tools."tech.complete"]
max_attempts = 2
deadline_s = 20

[retry.budget]
ratio = 0.1

[retry.breaker]
failure_threshold = 3

[[agents]]
id = "planner"
role = "dispatcher"
key_sha256 = "{PLANNER_SHA}"

[[agents]]
id = "field-bot"
role = "technician"
key_sha256 = "{FIELD_SHA}"
"""


# ---- reading ----------------------------------------------------------------------------


def test_without_environment_or_file_the_defaults_apply() -> None:
    settings = load_bridge_settings({})

    assert settings == BridgeSettings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.api_url == "http://127.0.0.1:8081"
    assert settings.gateway_token is None
    assert settings.agents == ()
    assert settings.retry == RetryConfig()


def test_settings_are_read_from_the_environment() -> None:
    settings = load_bridge_settings(
        {
            "DISPATCH_BRIDGE_PORT": "9090",
            "DISPATCH_API_URL": "https://dispatch.internal:8443",
            "DISPATCH_GATEWAY_TOKEN": GATEWAY_TOKEN,
            "DISPATCH_AGENT_KEYS": (
                f"planner:dispatcher:{PLANNER_SHA}, field-bot:technician:{FIELD_SHA}"
            ),
        }
    )

    assert settings.port == 9090
    assert settings.api_url == "https://dispatch.internal:8443"
    assert settings.gateway_token is not None
    assert settings.gateway_token.reveal() == GATEWAY_TOKEN
    assert settings.agents == (
        AgentKey("planner", "dispatcher", PLANNER_SHA),
        AgentKey("field-bot", "technician", FIELD_SHA),
    )


def test_the_gateway_token_is_masked_in_repr_and_str() -> None:
    settings = load_bridge_settings({"DISPATCH_GATEWAY_TOKEN": GATEWAY_TOKEN})

    assert GATEWAY_TOKEN not in repr(settings)
    assert GATEWAY_TOKEN not in str(settings)
    assert "Secret('**********')" in repr(settings)


def test_settings_are_read_from_the_bridge_retry_and_agents_tables(tmp_path: Path) -> None:
    settings = load_bridge_settings({}, _config(tmp_path, FULL_CONFIG))

    assert (settings.host, settings.port) == ("0.0.0.0", 9191)
    assert settings.api_url == "http://dispatch-api:8081"
    assert (settings.rate_limit_per_s, settings.rate_limit_burst) == (20.0, 40)
    assert settings.drain_timeout_s == 3.5
    default = RetryPolicy(max_attempts=4, per_try_timeout_s=1.5, deadline_s=8.0)
    assert settings.retry.default == default
    assert settings.retry.budget == BudgetConfig(ratio=0.1)
    assert settings.retry.breaker == BreakerConfig(failure_threshold=3)
    assert settings.agents == (
        AgentKey("planner", "dispatcher", PLANNER_SHA),
        AgentKey("field-bot", "technician", FIELD_SHA),
    )


def test_a_tool_override_inherits_the_rest_of_the_retry_table(tmp_path: Path) -> None:
    retry = load_bridge_settings({}, _config(tmp_path, FULL_CONFIG)).retry

    assert retry.for_tool("tech.complete") == replace(
        retry.default, max_attempts=2, deadline_s=20.0
    )
    assert retry.for_tool("tech.complete").per_try_timeout_s == 1.5
    assert retry.for_tool("ticket.get") == retry.default
    assert set(retry.tools) == {"tech.complete"}


def test_the_environment_wins_over_the_file_and_agents_from_both_count(tmp_path: Path) -> None:
    settings = load_bridge_settings(
        {
            "DISPATCH_BRIDGE_PORT": "7000",
            "DISPATCH_AGENT_KEYS": f"ops:supervisor:{OPS_SHA}",
        },
        _config(tmp_path, FULL_CONFIG),
    )

    assert settings.port == 7000
    assert settings.api_url == "http://dispatch-api:8081"
    assert [(a.id, a.role) for a in settings.agents] == [
        ("ops", "supervisor"),
        ("planner", "dispatcher"),
        ("field-bot", "technician"),
    ]


def test_an_agent_id_may_contain_a_colon(tmp_path: Path) -> None:
    """The id rule allows `:`; role and digest never contain one."""
    config = f"""
[[agents]]
id = "svc:planner"
role = "dispatcher"
key_sha256 = "{PLANNER_SHA}"
"""
    from_file = load_bridge_settings({}, _config(tmp_path, config))
    from_env = load_bridge_settings({"DISPATCH_AGENT_KEYS": f"svc:ops:supervisor:{OPS_SHA}"})

    assert from_file.agents == (AgentKey("svc:planner", "dispatcher", PLANNER_SHA),)
    assert from_env.agents == (AgentKey("svc:ops", "supervisor", OPS_SHA),)


# ---- refusing -------------------------------------------------------------------------


@pytest.mark.parametrize("port", ["eighty", "0", "65536", "-1", ""])
def test_a_bad_port_is_refused_naming_its_variable(port: str) -> None:
    message = _refusal({"DISPATCH_BRIDGE_PORT": port})

    assert message.startswith("DISPATCH_BRIDGE_PORT: ")


def test_a_bad_port_in_the_file_is_refused_too(tmp_path: Path) -> None:
    message = _refusal({}, "[bridge]\nport = 70000\n", tmp_path)

    assert "DISPATCH_BRIDGE_PORT" in message
    assert "1-65535" in message


def test_an_api_url_that_is_not_http_is_refused() -> None:
    message = _refusal({"DISPATCH_API_URL": "dispatch-api:8081"})

    assert message.startswith("DISPATCH_API_URL: ")


def test_mcp_allowed_origins_are_read_from_the_environment_and_the_file(tmp_path: Path) -> None:
    env = {"DISPATCH_MCP_ALLOWED_ORIGINS": "https://a.example, http://localhost:*"}
    path = _config(tmp_path, '[bridge]\nmcp_allowed_origins = ["https://b.example:8443"]\n')

    assert load_bridge_settings(env).mcp_allowed_origins == (
        "https://a.example",
        "http://localhost:*",
    )
    assert load_bridge_settings({}, path).mcp_allowed_origins == ("https://b.example:8443",)
    assert load_bridge_settings({}).mcp_allowed_origins == (
        "http://localhost:*",
        "http://127.0.0.1:*",
        "http://[::1]:*",
    )


@pytest.mark.parametrize("entry", ["*", "evil.example", "https://a.example/path", "ftp://a.b"])
def test_an_allowed_origin_that_is_not_an_origin_is_refused(entry: str) -> None:
    message = _refusal({"DISPATCH_MCP_ALLOWED_ORIGINS": entry})

    assert message.startswith("DISPATCH_MCP_ALLOWED_ORIGINS: ")


def test_an_unknown_agent_role_is_refused_with_the_roles_allowed() -> None:
    message = _refusal({"DISPATCH_AGENT_KEYS": f"planner:janitor:{PLANNER_SHA}"})

    assert message.startswith("DISPATCH_AGENT_KEYS: ")
    assert "'janitor'" in message
    assert "dispatcher" in message
    assert PLANNER_SHA not in message


@pytest.mark.parametrize(
    "digest",
    ["z" * 64, PLANNER_SHA.upper(), PLANNER_SHA[:63], PLANNER_SHA + "0", "planner-key"],
    ids=["not-hex", "upper-case", "short", "long", "clear-text-key"],
)
def test_a_key_digest_that_is_not_lowercase_sha256_hex_is_refused_without_echoing_it(
    digest: str,
) -> None:
    message = _refusal({"DISPATCH_AGENT_KEYS": f"planner:dispatcher:{digest}"})

    assert message.startswith("DISPATCH_AGENT_KEYS: ")
    assert "sha256" in message
    assert digest not in message


def test_an_agent_spec_without_three_parts_is_refused() -> None:
    message = _refusal({"DISPATCH_AGENT_KEYS": "planner-only"})

    assert message.startswith("DISPATCH_AGENT_KEYS: expected id:role:sha256")


def test_a_bad_agents_entry_in_the_file_is_refused_naming_the_entry(tmp_path: Path) -> None:
    config = f"""
[[agents]]
id = "planner"
role = "dispatcher"
key_sha256 = "{PLANNER_SHA}"

[[agents]]
id = "field-bot"
role = "plumber"
key_sha256 = "{FIELD_SHA}"
"""
    message = _refusal({}, config, tmp_path)

    assert message.startswith("[[agents]] #2: ")
    assert "'plumber'" in message


def test_an_agents_entry_with_a_clear_key_field_is_refused(tmp_path: Path) -> None:
    config = '[[agents]]\nid = "planner"\nrole = "dispatcher"\nkey = "planner-key"\n'

    message = _refusal({}, config, tmp_path)

    assert message == "[[agents]] #1: expected exactly id, role and key_sha256"


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ("[retry]\nmax_attempts = 0\n", "retry.max_attempts"),
        ("[retry]\nmax_attempts = 2.5\n", "retry.max_attempts"),
        ("[retry]\ndeadline_s = 1\nper_try_timeout_s = 2\n", "retry.deadline_s"),
        ('[retry]\nmax_backoff_s = "1s"\n', "retry.max_backoff_s"),
        ("[retry]\nretries = 3\n", "retry.retries"),
        ("[retry.budget]\nratio = 1.5\n", "retry.budget.ratio"),
        ("[retry.breaker]\nopen_s = 0\n", "retry.breaker.open_s"),
        ('[retry.tools."ticket.delete"]\nmax_attempts = 2\n', 'retry.tools."ticket.delete"'),
        (
            '[retry.tools."tech.complete"]\nmax_attempts = 11\n',
            'retry.tools."tech.complete".max_attempts',
        ),
        ('[retry.tools."tech_complete"]\nmax_attempts = 2\n', 'retry.tools."tech_complete"'),
        ("retry = 3\n", "retry"),
        ('[retry]\ntools = "all"\n', "retry.tools"),
    ],
    ids=[
        "zero-attempts",
        "fractional-attempts",
        "deadline-below-try-timeout",
        "not-a-number",
        "unknown-key",
        "budget-ratio",
        "breaker-open-time",
        "unknown-tool",
        "tool-too-many-attempts",
        "tool-alias",
        "retry-not-a-table",
        "tools-not-a-table",
    ],
)
def test_an_invalid_retry_policy_is_refused_naming_its_key(
    tmp_path: Path, config: str, key: str
) -> None:
    message = _refusal({}, config, tmp_path)

    assert message.startswith(f"{key}: ")


def test_an_unknown_tool_override_lists_the_known_tools(tmp_path: Path) -> None:
    message = _refusal({}, '[retry.tools."ticket.delete"]\nmax_attempts = 2\n', tmp_path)

    assert "unknown tool" in message
    assert "'tech.complete'" in message


def test_an_unknown_bridge_setting_is_refused(tmp_path: Path) -> None:
    message = _refusal({}, "[bridge]\nprot = 8080\n", tmp_path)

    assert "[bridge]" in message
    assert "'prot'" in message


def test_an_unreadable_file_is_refused_naming_it(tmp_path: Path) -> None:
    message = _refusal({}, "[bridge\nport = 1\n", tmp_path)

    assert message.startswith("--config ")
    assert "dispatch.toml" in message


# ---- showing ----------------------------------------------------------------------------


def test_describe_shows_agents_and_retry_but_no_token_and_no_key_digest(tmp_path: Path) -> None:
    settings = load_bridge_settings(
        {
            "DISPATCH_GATEWAY_TOKEN": GATEWAY_TOKEN,
            "DISPATCH_AGENT_KEYS": f"ops:supervisor:{OPS_SHA}",
        },
        _config(tmp_path, FULL_CONFIG),
    )

    described = settings.describe()
    shown = json.dumps(described)

    assert GATEWAY_TOKEN not in shown
    for digest in (PLANNER_SHA, FIELD_SHA, OPS_SHA):
        assert digest not in shown
    assert described["agents"] == [
        {"id": "ops", "role": "supervisor"},
        {"id": "planner", "role": "dispatcher"},
        {"id": "field-bot", "role": "technician"},
    ]
    assert described["retry"]["tools"]["tech.complete"]["max_attempts"] == 2
    assert described["api_url"] == "http://dispatch-api:8081"


# ---- the command line -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ("[retry]\nmax_attempts = 0\n", "retry.max_attempts"),
        ('[retry.tools."ticket.delete"]\nmax_attempts = 2\n', 'retry.tools."ticket.delete"'),
        ("retry = 3\n", "retry"),
    ],
    ids=["zero-attempts", "unknown-tool", "retry-not-a-table"],
)
def test_serve_bridge_with_an_invalid_retry_policy_exits_2_naming_the_key(
    tmp_path: Path, config: str, key: str
) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DISPATCH_GATEWAY_TOKEN": GATEWAY_TOKEN,
        "DISPATCH_DATA_DIR": str(tmp_path / "data"),
    }

    done = subprocess.run(
        [str(DISPATCH_BRIDGE), "--config", str(_config(tmp_path, config)), "serve-bridge"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2, done.stderr
    assert f"dispatch-bridge: invalid setting: {key}: " in done.stderr
    assert "Traceback" not in done.stderr
    assert GATEWAY_TOKEN not in done.stderr + done.stdout


def test_two_agents_with_one_id_or_one_key_are_refused() -> None:
    same_id = f"planner:dispatcher:{PLANNER_SHA},planner:technician:{FIELD_SHA}"
    same_key = f"planner:dispatcher:{PLANNER_SHA},ops:supervisor:{PLANNER_SHA}"

    by_id = _refusal({"DISPATCH_AGENT_KEYS": same_id})
    by_key = _refusal({"DISPATCH_AGENT_KEYS": same_key})

    assert by_id.startswith("DISPATCH_AGENT_KEYS: two agents share an id: ['planner']")
    assert by_key.startswith("DISPATCH_AGENT_KEYS: two agents share a key")
    assert PLANNER_SHA not in by_key


def test_repr_shows_no_key_digests() -> None:
    settings = load_bridge_settings({"DISPATCH_AGENT_KEYS": f"planner:dispatcher:{PLANNER_SHA}"})

    assert PLANNER_SHA not in repr(settings)


def test_per_key_limits_default_well_below_the_global_cap_and_are_read_from_env_and_file(
    tmp_path: Path,
) -> None:
    defaults = BridgeSettings()
    from_file = load_bridge_settings(
        {"DISPATCH_AGENT_MAX_IN_FLIGHT": "8"},
        _config(tmp_path, "[bridge]\nagent_max_in_flight_bytes = 4194304\n"),
    )

    assert defaults.agent_max_in_flight * 8 <= defaults.max_in_flight
    assert defaults.agent_max_in_flight_bytes >= defaults.max_body_bytes
    assert (from_file.agent_max_in_flight, from_file.agent_max_in_flight_bytes) == (8, 4194304)
    assert from_file.describe()["agent_max_in_flight"] == 8


@pytest.mark.parametrize(
    ("variable", "value"),
    [("DISPATCH_AGENT_MAX_IN_FLIGHT", "0"), ("DISPATCH_AGENT_MAX_IN_FLIGHT_BYTES", "100")],
)
def test_a_bad_per_key_limit_is_refused_naming_its_variable(variable: str, value: str) -> None:
    assert _refusal({variable: value}).startswith(f"{variable}: ")


def test_serve_bridge_without_its_gateway_token_exits_2_saying_how_to_get_one(
    tmp_path: Path,
) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "DISPATCH_DATA_DIR": str(tmp_path / "data")}

    done = subprocess.run(
        [str(DISPATCH_BRIDGE), "serve-bridge"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2, done.stderr
    assert "dispatch-bridge: invalid setting: DISPATCH_GATEWAY_TOKEN: " in done.stderr
    assert "create-principal" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_connection_pool_and_idle_trim_are_read_checked_and_shown(tmp_path: Path) -> None:
    defaults = BridgeSettings()
    from_env = load_bridge_settings(
        {"DISPATCH_API_MAX_CONNECTIONS": "32"}, _config(tmp_path, "[bridge]\nidle_trim_mb = 0\n")
    )

    assert defaults.api_max_connections < defaults.max_in_flight
    assert (from_env.api_max_connections, from_env.idle_trim_mb) == (32, 0)
    assert from_env.describe()["api_max_connections"] == 32
    assert "DISPATCH_API_MAX_CONNECTIONS" in _refusal({"DISPATCH_API_MAX_CONNECTIONS": "0"})
    assert "DISPATCH_IDLE_TRIM_MB" in _refusal({"DISPATCH_IDLE_TRIM_MB": "-1"})


def test_the_adaptive_limits_floor_is_read_checked_and_shown(tmp_path: Path) -> None:
    from_env = load_bridge_settings({"DISPATCH_MIN_IN_FLIGHT": "32"})
    from_file = load_bridge_settings({}, _config(tmp_path, "[bridge]\nmin_in_flight = 3\n"))

    assert BridgeSettings().min_in_flight < BridgeSettings().max_in_flight
    assert (from_env.min_in_flight, from_file.min_in_flight) == (32, 3)
    assert from_env.describe()["min_in_flight"] == 32
    assert "DISPATCH_MIN_IN_FLIGHT" in _refusal({"DISPATCH_MIN_IN_FLIGHT": "0"})
