"""dispatch-api settings: one frozen object, read once at the entrypoint.

Values come from `DISPATCH_*` environment variables over an optional TOML file whose keys are
the field names (`api_port = 8081`). A bad value raises `SettingsError` naming the setting, so
start-up stops with a message an operator can act on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from settings import Secret, SettingsError, build_settings, env_name, read_config, top_level

from .domain import (
    ApprovalPolicy,
    PolicyError,
    Priority,
    SlaTargets,
    WindowPolicy,
    parse_policy,
)

# Secret and SettingsError appear in this module's signatures: importable from here too.
__all__ = [
    "DEFAULT_EVIDENCE_TYPES",
    "ApiSettings",
    "Secret",
    "SettingsError",
    "load_api_settings",
    "parse_approvals",
]


DEFAULT_EVIDENCE_TYPES = (
    "image/jpeg",
    "image/png",
    "image/webp",
    "image/heic",
    "application/pdf",
    "text/plain",
)


@dataclass(frozen=True, slots=True)
class ApiSettings:
    data_dir: Path = Path(".dispatch")
    database_url: Secret | None = None
    api_host: str = "127.0.0.1"
    api_port: int = 8081
    bridge_port: int = 8080
    db_pool_min: int = 2
    db_pool_max: int = 10
    db_statement_timeout_ms: int = 5000
    #: How long a request waits for a row another request holds (an idempotency key in
    #: flight, a ticket being changed) before it answers 409 with Retry-After.
    db_lock_timeout_ms: int = 2000
    max_json_bytes: int = 64 * 1024
    evidence_max_bytes: int = 5 * 1024 * 1024
    evidence_content_types: tuple[str, ...] = DEFAULT_EVIDENCE_TYPES
    #: Evidence items one ticket may hold; an attach beyond answers 409 evidence_limit_reached.
    max_evidence_per_ticket: int = 200
    #: How many minutes in the past a schedule window may start (clock skew, a slow call).
    schedule_grace_minutes: float = 5.0
    #: The longest window one schedule may book, in hours.
    schedule_max_window_hours: float = 12.0
    idempotency_retention_hours: int = 24
    idempotency_purge_interval_s: float = 600.0
    templates_file: Path | None = None
    #: Response/resolution targets in hours per priority, e.g. "P1=2/8,P2=4/24,P3=24/72,P4=72/168".
    sla_targets: str = "P1=2/8,P2=4/24,P3=24/72,P4=72/168"
    #: A target due within this many minutes is "at risk".
    sla_at_risk_minutes: float = 60.0
    sla_sweep_interval_s: float = 15.0
    #: The `[approvals]` table: which agent tool calls a person must approve first.
    approvals: ApprovalPolicy = field(default_factory=ApprovalPolicy.defaults)
    #: How often pending approvals past their expiry are marked expired (and the
    #: approval gauges refreshed).
    approvals_sweep_interval_s: float = 15.0
    #: > 0: refresh the database gauges in the background every so many seconds, so a
    #: scrape never queries the database. 0: at each scrape (exact; one query at a time).
    metrics_refresh_s: float = 15.0
    #: The console's tool page reads fleet-wide figures from this Prometheus' HTTP API.
    prometheus_url: str | None = None
    #: Without Prometheus, the bridge whose /metrics the tool page reads (one replica).
    bridge_url: str | None = None
    #: Never-seen bearer tokens are looked up at most this many at a time: the rest of the
    #: pool stays for authenticated requests whatever an unauthenticated flood sends.
    auth_lookup_concurrency: int = 2
    #: On SIGTERM, how long requests in flight may take to finish.
    drain_timeout_s: float = 10.0
    #: On SIGTERM, how long /readyz answers 503 while requests are still accepted, before
    #: the listener closes (load balancers stop routing here first).
    drain_delay_s: float = 0.0
    #: How long a console sign-in lasts (the session cookie's Max-Age and the row's expiry).
    console_session_minutes: int = 480
    #: Mark console cookies Secure even when the request reached dispatch-api over plain
    #: HTTP: TLS ends at a proxy in front (the k8s Ingress). Over TLS they always are.
    console_secure_cookies: bool = False
    #: A URL with `{trace_id}` (e.g. Jaeger's `https://jaeger.example/trace/{trace_id}`): the
    #: console links each timeline event's trace id there. Unset: trace ids are plain text.
    trace_ui_url: str | None = None

    def __post_init__(self) -> None:
        _check(1 <= self.api_port <= 65535, "api_port", "must be a port number (1-65535)")
        _check(1 <= self.bridge_port <= 65535, "bridge_port", "must be a port number (1-65535)")
        _check(self.db_pool_min >= 1, "db_pool_min", "must be at least 1")
        _check(self.db_pool_max >= self.db_pool_min, "db_pool_max", "must be >= db_pool_min")
        _check(self.db_statement_timeout_ms > 0, "db_statement_timeout_ms", "must be positive")
        _check(self.db_lock_timeout_ms > 0, "db_lock_timeout_ms", "must be positive")
        _check(self.max_json_bytes >= 1024, "max_json_bytes", "must be at least 1024")
        _check(self.evidence_max_bytes >= 1, "evidence_max_bytes", "must be positive")
        _check(self.max_evidence_per_ticket >= 1, "max_evidence_per_ticket", "must be positive")
        _check(self.schedule_grace_minutes >= 0, "schedule_grace_minutes", "must not be negative")
        _check(self.schedule_max_window_hours > 0, "schedule_max_window_hours", "must be positive")
        _check(
            self.idempotency_retention_hours >= 24,
            "idempotency_retention_hours",
            "must be at least 24 (clients may retry for a day)",
        )
        _check(
            self.idempotency_purge_interval_s > 0,
            "idempotency_purge_interval_s",
            "must be positive",
        )
        _check(self.sla_at_risk_minutes >= 0, "sla_at_risk_minutes", "must not be negative")
        _check(self.sla_sweep_interval_s > 0, "sla_sweep_interval_s", "must be positive")
        _check(
            self.approvals_sweep_interval_s > 0, "approvals_sweep_interval_s", "must be positive"
        )
        _check(self.metrics_refresh_s >= 0, "metrics_refresh_s", "must not be negative")
        for name in ("prometheus_url", "bridge_url"):
            _check(_http_url(getattr(self, name)), name, "must be an http(s) URL")
        _check(
            1 <= self.auth_lookup_concurrency <= self.db_pool_max,
            "auth_lookup_concurrency",
            "must be between 1 and db_pool_max",
        )
        _check(self.drain_timeout_s >= 0, "drain_timeout_s", "must not be negative")
        _check(self.drain_delay_s >= 0, "drain_delay_s", "must not be negative")
        _check(self.console_session_minutes >= 1, "console_session_minutes", "must be positive")
        _check(
            self.trace_ui_url is None
            or (
                self.trace_ui_url.startswith(("http://", "https://"))
                and "{trace_id}" in self.trace_ui_url
            ),
            "trace_ui_url",
            "must be an http(s) URL containing {trace_id}",
        )
        self.targets  # noqa: B018 - parse now, so a bad value stops start-up

    @property
    def targets(self) -> SlaTargets:
        """`sla_targets` parsed; SettingsError naming DISPATCH_SLA_TARGETS when malformed."""
        response: dict[Priority, float] = {}
        resolution: dict[Priority, float] = {}
        for part in self.sla_targets.split(","):
            name, _, hours = part.strip().partition("=")
            first, _, second = hours.partition("/")
            try:
                priority = Priority(name)
                response[priority] = float(first) * 3600
                resolution[priority] = float(second) * 3600
            except ValueError:
                raise SettingsError(
                    f"DISPATCH_SLA_TARGETS: cannot read {part.strip()!r};"
                    " expected P1=<response hours>/<resolution hours>"
                ) from None
            if not 0 < response[priority] <= resolution[priority]:
                raise SettingsError(
                    f"DISPATCH_SLA_TARGETS: {name} needs 0 < response <= resolution"
                )
        missing = [str(p) for p in Priority if p not in response]
        if missing:
            raise SettingsError(f"DISPATCH_SLA_TARGETS: no targets for {', '.join(missing)}")
        return SlaTargets(response, resolution)

    @property
    def window_policy(self) -> WindowPolicy:
        return WindowPolicy(
            grace=timedelta(minutes=self.schedule_grace_minutes),
            max_window=timedelta(hours=self.schedule_max_window_hours),
        )

    @property
    def max_body_bytes(self) -> int:
        """Largest request body accepted: an inline evidence upload, base64-encoded."""
        return (self.evidence_max_bytes * 4) // 3 + 4 + self.max_json_bytes


def _http_url(value: str | None) -> bool:
    """Not set, or an absolute http(s) URL with a host."""
    if not value:
        return True
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise SettingsError(f"{env_name(name)}: {message}")


def load_api_settings(
    env: Mapping[str, str], config_file: Path | None = None, **overrides: Any
) -> ApiSettings:
    """Build settings from the top-level keys of a TOML file (optional; its tables belong to
    others), then `DISPATCH_*` variables, then overrides."""
    whole = read_config(config_file)
    if "approvals" not in overrides:
        overrides["approvals"] = parse_approvals(whole.get("approvals"))
    raw = top_level(whole)
    return build_settings(ApiSettings, env, raw, where=str(config_file), **overrides)


def parse_approvals(raw: Any) -> ApprovalPolicy:
    """The `[approvals]` table as a policy (None: the shipped defaults); SettingsError naming
    the rule and the key at fault."""
    try:
        return parse_policy(raw)
    except PolicyError as exc:
        raise SettingsError(str(exc)) from None
