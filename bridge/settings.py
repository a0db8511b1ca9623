"""Bridge settings: one frozen object, read once at the entrypoint.

Environment (`DISPATCH_BRIDGE_HOST`, `DISPATCH_BRIDGE_PORT`, `DISPATCH_API_URL`,
`DISPATCH_GATEWAY_TOKEN`, `DISPATCH_AGENT_KEYS`, ...) over the TOML tables `[bridge]`,
`[retry]` (see dispatch_client), `[oauth]` (bridge/_oauth_settings.py) and `[[agents]]`.
Agent keys are configured as sha256 digests, never in clear.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dispatch_client import PolicyError, RetryConfig, parse_retry_config
from settings import Schema, Secret, SettingsError, build_settings, fields_of, read_config
from tools import ROLES, TOOL_NAMES, ToolNames, catalog

from ._oauth_settings import OAuthSettings
from ._origins import DEFAULT_ALLOWED_ORIGINS, OriginError, OriginPolicy

_AGENT_ID = re.compile(r"[A-Za-z0-9._:@+=-]{1,128}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class AgentKey:
    """An agent's identity: who it acts as, with which role, and its key's sha256."""

    id: str
    role: str
    key_sha256: str


def parse_agent(spec: str, where: str) -> AgentKey:
    """`id:role:sha256hex`, as in DISPATCH_AGENT_KEYS (comma-separated)."""
    # From the right: the id may contain ":" (see _AGENT_ID), role and digest never do.
    parts = spec.rsplit(":", 2)
    if len(parts) != 3:
        raise SettingsError(f"{where}: expected id:role:sha256, got {spec[:40]!r}")
    agent_id, role, digest = parts
    if not _AGENT_ID.fullmatch(agent_id):
        raise SettingsError(f"{where}: agent id {agent_id!r} must be 1-128 safe characters")
    if role not in ROLES:
        raise SettingsError(f"{where}: role {role!r} must be one of {sorted(ROLES)}")
    if not _SHA256.fullmatch(digest):
        raise SettingsError(f"{where}: key of {agent_id!r} must be a lowercase hex sha256")
    return AgentKey(agent_id, role, digest)


@dataclass(frozen=True, slots=True)
class BridgeSettings:
    host: str = field(default="127.0.0.1", metadata={"env": "DISPATCH_BRIDGE_HOST"})
    port: int = field(default=8080, metadata={"env": "DISPATCH_BRIDGE_PORT"})
    api_url: str = field(default="http://127.0.0.1:8081", metadata={"env": "DISPATCH_API_URL"})
    #: The bridge's own dispatch-api token: a principal trusted to assert the acting agent.
    gateway_token: Secret | None = None
    #: `id:role:sha256` entries (DISPATCH_AGENT_KEYS, comma-separated); see also [[agents]].
    agent_keys: tuple[str, ...] = field(default=(), repr=False)
    #: Off: agent keys are refused (OAuth only), without removing them from the config.
    static_keys: bool = True
    #: The URL agents reach the bridge at: the OAuth resource and its metadata's address.
    public_url: str = ""
    oauth: OAuthSettings = field(default_factory=OAuthSettings)
    #: The body limit of calls to tools that carry content inline (evidence.attach).
    max_body_bytes: int = field(
        default=8 * 1024 * 1024, metadata={"env": "DISPATCH_BRIDGE_MAX_BODY_BYTES"}
    )
    #: The body limit of every other call and MCP message (never above max_body_bytes): far
    #: below it, so a hostile body to a small tool is refused before it is validated.
    max_call_bytes: int = field(
        default=64 * 1024, metadata={"env": "DISPATCH_BRIDGE_MAX_CALL_BYTES"}
    )
    rate_limit_per_s: float = 50.0
    rate_limit_burst: int = 100
    #: Admission control: tool calls beyond this many in flight are refused at once with
    #: `rate_limited`, so overload sheds work instead of queueing it without bound.
    max_in_flight: int = 256
    #: The floor of the adaptive limit on calls in flight (see _concurrency.py): between
    #: this and max_in_flight, the limit follows the calls' latency, and calls beyond it are
    #: refused at once, before their body is read. At or above max_in_flight: a fixed cap.
    min_in_flight: int = 8
    #: Connections to dispatch-api (the pool): calls beyond wait for one within their try's
    #: time, then `upstream_unavailable` (outcome none: never sent). Apart from
    #: max_in_flight so that many calls waiting on a slow dispatch-api do not each hold a
    #: connection, its buffers and descriptors (bench/memory.py).
    api_max_connections: int = 128
    #: When a second passes with no call in flight or started and RSS grew this many MiB
    #: since the last time, give freed memory back to the OS (see _trim.py); 0: off.
    idle_trim_mb: int = 16
    #: Overload admission: while the event loop runs its timers later than this, new tool
    #: calls are refused at once with `rate_limited` before their body is read (see
    #: _overload.py); 0 turns it off.
    max_loop_lag_ms: float = 20.0
    #: Fairness: one agent key may have at most this many calls, and request bodies of at
    #: most this many bytes, in flight; beyond, `rate_limited` at once (see _fairness.py).
    #: Well below max_in_flight, so no one key can take the whole budget.
    agent_max_in_flight: int = 16
    agent_max_in_flight_bytes: int = 16 * 1024 * 1024
    #: Fairness over time: request-body bytes one key may send per second, sustained (a
    #: token bucket as deep as agent_max_in_flight_bytes, so a burst of uploads still runs).
    #: The in-flight caps bound what a key holds at once; this bounds the share of CPU and
    #: of dispatch-api a key's uploads take, which is what slows every other agent.
    agent_max_bytes_per_s: int = 4 * 1024 * 1024
    #: On SIGTERM, how long in-flight calls may take to finish.
    drain_timeout_s: float = 10.0
    #: On SIGTERM, how long /readyz answers 503 while calls are still accepted, before the
    #: listener closes: load balancers that probe readiness stop routing here first.
    drain_delay_s: float = 0.0
    retry: RetryConfig = field(default_factory=RetryConfig)
    #: Browser origins allowed to call /mcp (the DNS-rebinding guard); see bridge/_origins.py.
    mcp_allowed_origins: tuple[str, ...] = field(
        default=DEFAULT_ALLOWED_ORIGINS, metadata={"env": "DISPATCH_MCP_ALLOWED_ORIGINS"}
    )
    #: What MCP tools/list (and ?format=mcp) names a tool: `safe` (`tech_complete`, what
    #: OpenAI- and Anthropic-backed agents accept) or `dotted` (`tech.complete`). Calls
    #: accept both either way.
    mcp_tool_names: str = "safe"

    def __post_init__(self) -> None:
        def check(ok: bool, variable: str, message: str) -> None:
            if not ok:
                raise SettingsError(f"{variable}: {message}")

        check(1 <= self.port <= 65535, "DISPATCH_BRIDGE_PORT", "must be a port number (1-65535)")
        check(
            self.api_url.startswith(("http://", "https://")),
            "DISPATCH_API_URL",
            "must be an http(s) URL",
        )
        check(self.max_body_bytes >= 1024, "DISPATCH_BRIDGE_MAX_BODY_BYTES", "must be >= 1024")
        check(self.max_call_bytes >= 1024, "DISPATCH_BRIDGE_MAX_CALL_BYTES", "must be >= 1024")
        check(self.rate_limit_per_s > 0, "DISPATCH_RATE_LIMIT_PER_S", "must be positive")
        check(self.rate_limit_burst >= 1, "DISPATCH_RATE_LIMIT_BURST", "must be at least 1")
        check(self.max_in_flight >= 1, "DISPATCH_MAX_IN_FLIGHT", "must be at least 1")
        check(self.min_in_flight >= 1, "DISPATCH_MIN_IN_FLIGHT", "must be at least 1")
        check(self.api_max_connections >= 1, "DISPATCH_API_MAX_CONNECTIONS", "must be >= 1")
        check(self.idle_trim_mb >= 0, "DISPATCH_IDLE_TRIM_MB", "must be >= 0 (0: off)")
        check(self.max_loop_lag_ms >= 0, "DISPATCH_MAX_LOOP_LAG_MS", "must not be negative")
        check(self.agent_max_in_flight >= 1, "DISPATCH_AGENT_MAX_IN_FLIGHT", "must be >= 1")
        check(
            self.agent_max_in_flight_bytes >= 1024,
            "DISPATCH_AGENT_MAX_IN_FLIGHT_BYTES",
            "must be >= 1024",
        )
        check(
            self.agent_max_bytes_per_s >= 1024,
            "DISPATCH_AGENT_MAX_BYTES_PER_S",
            "must be >= 1024",
        )
        check(self.drain_timeout_s >= 0, "DISPATCH_DRAIN_TIMEOUT_S", "must not be negative")
        check(self.drain_delay_s >= 0, "DISPATCH_DRAIN_DELAY_S", "must not be negative")
        check(
            self.mcp_tool_names in TOOL_NAMES,
            "DISPATCH_MCP_TOOL_NAMES",
            f"must be one of {', '.join(TOOL_NAMES)}",
        )
        try:
            OriginPolicy(self.mcp_allowed_origins)
        except OriginError as exc:
            check(False, "DISPATCH_MCP_ALLOWED_ORIGINS", str(exc))
        check(
            self.public_url == "" or self.public_url.startswith(("http://", "https://")),
            "DISPATCH_PUBLIC_URL",
            "must be an http(s) URL",
        )
        check(
            self.public_url != "" or not self.oauth.enabled,
            "DISPATCH_PUBLIC_URL",
            "is required with DISPATCH_OAUTH_ISSUER (it names the resource tokens are for)",
        )
        check(
            self.static_keys or self.oauth.enabled,
            "DISPATCH_STATIC_KEYS",
            "off needs DISPATCH_OAUTH_ISSUER, or no agent could ever authenticate",
        )
        agents = self.agents  # parse now, so a bad key stops start-up
        ids = [a.id for a in agents]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        check(not repeated, "DISPATCH_AGENT_KEYS", f"two agents share an id: {repeated}")
        digests = [a.key_sha256 for a in agents]
        check(len(set(digests)) == len(digests), "DISPATCH_AGENT_KEYS", "two agents share a key")

    @property
    def listed_names(self) -> ToolNames:
        """mcp_tool_names, typed (checked in __post_init__)."""
        return "dotted" if self.mcp_tool_names == "dotted" else "safe"

    @property
    def agents(self) -> tuple[AgentKey, ...]:
        return tuple(parse_agent(spec, "DISPATCH_AGENT_KEYS") for spec in self.agent_keys)

    def describe(self) -> dict[str, Any]:
        """What `GET /v1/config` shows: everything but secrets and key digests."""
        return {
            "api_url": self.api_url,
            "max_body_bytes": self.max_body_bytes,
            "max_call_bytes": self.max_call_bytes,
            "rate_limit": {"per_s": self.rate_limit_per_s, "burst": self.rate_limit_burst},
            "max_in_flight": self.max_in_flight,
            "min_in_flight": self.min_in_flight,
            "api_max_connections": self.api_max_connections,
            "idle_trim_mb": self.idle_trim_mb,
            "max_loop_lag_ms": self.max_loop_lag_ms,
            "agent_max_in_flight": self.agent_max_in_flight,
            "agent_max_in_flight_bytes": self.agent_max_in_flight_bytes,
            "agent_max_bytes_per_s": self.agent_max_bytes_per_s,
            "drain_timeout_s": self.drain_timeout_s,
            "drain_delay_s": self.drain_delay_s,
            "agents": [{"id": a.id, "role": a.role} for a in self.agents],
            "static_keys": self.static_keys,
            "public_url": self.public_url or None,
            "oauth": self.oauth.describe(),
            "mcp_allowed_origins": list(self.mcp_allowed_origins),
            "mcp_tool_names": self.mcp_tool_names,
            "retry": self.retry.describe(),
        }


def load_bridge_settings(
    env: Mapping[str, str], config_file: Path | None = None, **overrides: Any
) -> BridgeSettings:
    raw = read_config(config_file)
    table = raw.get("bridge", {})
    agents_raw = raw.get("agents", [])
    if not isinstance(table, Mapping) or not isinstance(agents_raw, list):
        raise SettingsError(f"{config_file}: [bridge] must be a table, [[agents]] a list")
    specs = [_agent_spec(a, i) for i, a in enumerate(agents_raw)]
    retry = _retry(raw.get("retry"))
    oauth_table = raw.get("oauth", {})
    if not isinstance(oauth_table, Mapping):
        raise SettingsError(f"{config_file}: [oauth] must be a table")
    oauth = build_settings(OAuthSettings, env, oauth_table, where=f"{config_file} [oauth]")
    settings = build_settings(
        BridgeSettings,
        env,
        table,
        where=f"{config_file} [bridge]",
        **{"retry": retry, "oauth": oauth, **overrides},
    )
    if specs:
        settings = replace(settings, agent_keys=(*settings.agent_keys, *specs))
    return settings


def _retry(raw: Any) -> RetryConfig:
    if raw is not None and not isinstance(raw, Mapping):
        raise SettingsError(f"retry: expected a table, got {raw!r}")
    try:
        return parse_retry_config(raw, frozenset(t.name for t in catalog()))
    except PolicyError as exc:
        raise SettingsError(str(exc)) from None


#: The bridge's tables of the configuration file, for the one check of the whole file.
TABLES: Schema = {
    "bridge": fields_of(BridgeSettings) - {"retry", "oauth"},
    "oauth": fields_of(OAuthSettings),
    "retry": _retry,
    "agents": fields_of(AgentKey),
}


def _agent_spec(raw: Any, index: int) -> str:
    where = f"[[agents]] #{index + 1}"
    if not isinstance(raw, Mapping) or set(raw) != {"id", "role", "key_sha256"}:
        raise SettingsError(f"{where}: expected exactly id, role and key_sha256")
    spec = f"{raw['id']}:{raw['role']}:{raw['key_sha256']}"
    parse_agent(spec, where)
    return spec
