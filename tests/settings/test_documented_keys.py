"""Every table and key the README documents is accepted by the one loader, and lands where
it says: a key documented but refused (the `[logging]` table once stopped every command) or
documented but read by nothing fails here.

The README is the source: each row of the tables under "Configuration" names its variables
and, in brackets, its TOML keys (`(`[server] idle_timeout_s`)`; a bare key before any table
is a top-level key); a row without brackets is a top-level key, the variable's name in lower
case without `DISPATCH_`. The TOML block there (`[retry]`, `[[agents]]`) is loaded as written.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from dispatch_bridge._config import load_config
from settings import Secret, SettingsError

README = Path(__file__).resolve().parents[2] / "README.md"
SHA = "0" * 63 + "1"

#: Values for keys whose documented default is not a literal a TOML file could hold.
SAMPLES: dict[tuple[str, str], Any] = {
    ("", "database_url"): "postgresql://dispatch@db.internal/dispatch",
    ("", "evidence_content_types"): ["image/png", "text/plain"],
    ("", "templates_file"): "templates.json",
    ("", "prometheus_url"): "http://prometheus:9090",
    ("", "bridge_url"): "http://bridge:8080",
    ("", "trace_ui_url"): "https://jaeger.example/trace/{trace_id}",
    ("", "console_secure_cookies"): True,
    ("bridge", "gateway_token"): "gateway-token",
    # OAuth on needs an issuer and the public URL; then agent keys may be off.
    ("bridge", "public_url"): "https://bridge.example",
    ("bridge", "static_keys"): False,
    ("oauth", "issuer"): "https://login.example",
    ("oauth", "audience"): "api://dispatch-bridge",
    ("tracing", "otlp_endpoint"): "http://otel-collector:4318/v1/traces",
    # Shifting the default (1.0) would leave the allowed range.
    ("tracing", "sampling_ratio"): 0.5,
}


def _configuration() -> str:
    text = README.read_text()
    section = re.search(r"^## Configuration\n(.*?)^## ", text, re.S | re.M)
    assert section, "README.md lost its Configuration section"
    return section.group(1)


def _literal(raw: str) -> Any:
    """A documented default, moved off it where it can be, so the test sees it take effect."""
    if re.fullmatch(r"-?\d+", raw):
        return int(raw) + 1
    if re.fullmatch(r"-?\d+\.\d*", raw):
        return float(raw) + 1
    return raw


def documented_keys() -> dict[tuple[str, str], Any]:
    """(table, key) -> a value, for every setting a Configuration table row documents."""
    keys: dict[tuple[str, str], Any] = {}
    for row in re.findall(r"^\| `DISPATCH_.*$", _configuration(), re.M):
        name_cell, default_cell = (cell.strip() for cell in row.strip("|").split("|")[:2])
        variables = re.findall(r"`(DISPATCH_[A-Z0-9_]+)`", name_cell)
        toml = re.search(r"\((.*)\)", name_cell)
        if toml and "`" not in toml.group(1):
            continue  # "(environment only)"
        if toml:
            table, places = "", []
            for token in re.findall(r"`([^`]+)`", toml.group(1)):
                if token.startswith("[["):
                    continue  # an array of tables: the TOML block shows it
                named = re.fullmatch(r"\[(\w+)\] (\w+)", token)
                if named:
                    table, token = named.groups()
                places.append((table, token))
        else:
            places = [("", v.removeprefix("DISPATCH_").lower()) for v in variables]
        defaults = [d.strip() for d in default_cell.split(" / ")]
        literals = re.findall(r"`([^`]*)`", default_cell)
        for index, place in enumerate(places):
            if place in SAMPLES:
                keys[place] = SAMPLES[place]
            elif len(defaults) == len(places) == len(literals):  # `a` / `b`: one each
                keys[place] = _literal(defaults[index].strip("`"))
            elif len(literals) == 1:  # one default for every key of the row
                keys[place] = _literal(literals[0])
            elif len(places) == 1 and literals:  # a list, e.g. the allowed origins
                keys[place] = literals
            else:
                pytest.fail(f"add a sample value for {place} (documented default: {default_cell})")
    return keys


def _documented_block() -> str:
    block = re.search(r"```toml\n(.*?)```", _configuration(), re.S)
    assert block, "README.md lost its TOML example"
    return block.group(1).replace("…", SHA)


def _file(keys: dict[tuple[str, str], Any], block: str) -> str:
    lines = [f"{key} = {json.dumps(v)}" for (table, key), v in keys.items() if not table]
    for name in sorted({table for table, _ in keys if table}):
        lines.append(f"\n[{name}]")
        lines += [f"{key} = {json.dumps(v)}" for (table, key), v in keys.items() if table == name]
    return "\n".join(lines) + "\n\n" + block


def _plain(value: Any) -> Any:
    if isinstance(value, Secret):
        return value.reveal()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def test_the_readme_documents_the_tables_of_both_services() -> None:
    tables = {table for table, _ in documented_keys()}

    assert tables == {"", "server", "logging", "tracing", "bridge", "oauth"}
    assert {"retry", "agents"} <= set(tomllib.loads(_documented_block()))


def test_a_file_with_every_documented_table_and_key_loads_and_each_value_takes_effect(
    tmp_path: Path,
) -> None:
    keys = documented_keys()
    path = tmp_path / "settings.toml"
    path.write_text(_file(keys, _documented_block()))

    config = load_config({}, path)

    bridge = config.bridge()
    owners = {
        "": config.api,
        "server": config.server,
        "logging": config.logging,
        "tracing": config.tracing,
        "bridge": bridge,
        "oauth": bridge.oauth,
    }
    for (table, key), value in keys.items():
        assert _plain(getattr(owners[table], key)) == value, (table, key)
    block = tomllib.loads(_documented_block())
    for key, value in block["retry"].items():
        if key == "tools":
            for tool, overrides in value.items():
                for name, want in overrides.items():
                    assert getattr(bridge.retry.for_tool(tool), name) == want, (tool, name)
        elif isinstance(value, dict):
            for name, want in value.items():
                assert getattr(getattr(bridge.retry, key), name) == want, (key, name)
        else:
            assert getattr(bridge.retry.default, key) == value, key
    assert [(a.id, a.role) for a in bridge.agents] == [
        (a["id"], a["role"]) for a in block["agents"]
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[loging]\nlevel = "info"\n', "unknown table [loging]; known tables: agents, approvals,"),
        ('[logging]\nlevle = "info"\n', "unknown setting 'levle' in [logging]"),
        ("[server]\nidle_timeout = 5\n", "unknown setting 'idle_timeout' in [server]"),
        ("[tracing]\nexporter = 'otlp'\nratio = 0.1\n", "unknown setting 'ratio' in [tracing]"),
        ("[bridge]\nrate_limit = 5\n", "unknown setting 'rate_limit' in [bridge]"),
        ('[[agents]]\nid = "a"\nrole = "dispatcher"\nkey = "k"\n', "'key' in [agents]"),
        ("[retry.breaker]\nthreshold = 3\n", "retry.breaker.threshold: unknown setting"),
        ("rate_limit_per_s = 5\n", "unknown setting 'rate_limit_per_s'"),
        ("logging = 'warning'\n", "logging: expected a table, got 'warning'"),
    ],
    ids=[
        "table",
        "logging-key",
        "server-key",
        "tracing-key",
        "bridge-key",
        "agents-key",
        "retry-key",
        "bridge-key-at-top-level",
        "table-as-a-value",
    ],
)
def test_a_table_or_key_no_setting_reads_is_refused_naming_it(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(text)

    with pytest.raises(SettingsError) as refused:
        load_config({}, path)

    assert message in str(refused.value)


def test_the_logging_table_sets_the_level_and_the_environment_wins_over_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "settings.toml"
    path.write_text('[logging]\nlevel = "warning"\n')

    assert load_config({}, path).logging.level == "warning"
    assert load_config({"DISPATCH_LOG_LEVEL": "error"}, path).logging.level == "error"
