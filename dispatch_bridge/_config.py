"""The one loader of the configuration: `DISPATCH_*` variables over the `--config` TOML file.

It knows every table the README documents — dispatch-api's top-level keys, `[approvals]`,
`[server]`, `[logging]`, `[tracing]`, and the bridge's `[bridge]`, `[retry]` (with its
sub-tables), `[oauth]` and `[[agents]]` — and refuses any other table or key before a
command does anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.settings import TABLES as BRIDGE_TABLES
from bridge.settings import BridgeSettings, load_bridge_settings
from dispatch_api.settings import ApiSettings, load_api_settings, parse_approvals
from settings import Schema, build_settings, check_config, fields_of, read_config
from telemetry import LogSettings, ServerSettings, TracingSettings

#: Every table of the configuration file, and the keys each may hold.
SCHEMA: Schema = {
    "": fields_of(ApiSettings),
    "server": fields_of(ServerSettings),
    "logging": fields_of(LogSettings),
    "tracing": fields_of(TracingSettings),
    "approvals": parse_approvals,
    **BRIDGE_TABLES,
}


@dataclass(frozen=True, slots=True)
class Config:
    """The settings every command shares; the bridge's are built by the commands that run it."""

    path: Path | None
    env: Mapping[str, str]
    api: ApiSettings
    server: ServerSettings
    logging: LogSettings
    tracing: TracingSettings

    def bridge(self, **overrides: Any) -> BridgeSettings:
        return load_bridge_settings(self.env, self.path, **overrides)


def load_config(env: Mapping[str, str], path: Path | None) -> Config:
    """Every shared setting, once the whole file has been checked; SettingsError naming the
    first unknown table or key, or the first malformed value."""
    raw = read_config(path)
    check_config(raw, SCHEMA, where=f"--config {path}")

    def table(name: str) -> Mapping[str, Any]:
        value: Mapping[str, Any] = raw.get(name, {})
        return value

    return Config(
        path=path,
        env=env,
        api=load_api_settings(env, path),
        server=build_settings(ServerSettings, env, table("server"), where="[server]"),
        logging=build_settings(LogSettings, env, table("logging"), where="[logging]"),
        tracing=build_settings(TracingSettings, env, table("tracing"), where="[tracing]"),
    )
