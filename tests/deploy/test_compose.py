"""The docker-compose stack in deploy/compose/, checked offline (no Docker engine needed).

The compose file is validated against the vendored Compose Specification schema
(tests/deploy/schemas/), its mounts and references are resolved against the repository, the
services' DISPATCH_* environment is read by the product's own settings loaders, and the
Prometheus, Alertmanager, OpenTelemetry Collector, Grafana and nginx configuration it mounts
is parsed and cross-checked against the service names and ports.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import fields
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest

from bridge.settings import BridgeSettings, load_bridge_settings
from dispatch_api.settings import ApiSettings, load_api_settings
from settings import build_settings, env_name
from settings._build import _PARSERS
from telemetry import TracingSettings

# PyYAML ships no type information (and types-PyYAML is not a dependency): typed as Any.
yaml: Any = importlib.import_module("yaml")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
SCHEMA = Path(__file__).resolve().parent / "schemas" / "compose-spec.json"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
RULES = DEPLOY / "prometheus" / "rules" / "dispatch-bridge.rules.yml"
COLLECTOR = DEPLOY / "otel" / "collector.yaml"
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"
GRAFANA = DEPLOY / "grafana" / "provisioning"
NGINX = COMPOSE_DIR / "nginx.conf"

BRIDGES = ("bridge-1", "bridge-2")
ONE_SHOTS = ("migrate", "bootstrap")

#: The oldest Compose deploy/README.md promises (checked by hand with Compose v2.20.3's
#: `config`). What the file may use, each part known to it: `name` needs Compose v2 (v1, Debian
#: 12's `docker-compose` 1.29, refuses it), the other keys are older still. A key past these
#: lists (`develop`, `include`, `depends_on.required`, `healthcheck.start_interval`, ...) is
#: newer: raise the version in deploy/README.md, then here.
MIN_COMPOSE = "2.20"
COMPOSE_TOP_LEVEL = {"name", "services", "volumes", "networks", "configs", "secrets"}
COMPOSE_SERVICE_KEYS = {
    "image",
    "build",
    "command",
    "entrypoint",
    "restart",
    "stop_grace_period",
    "environment",
    "healthcheck",
    "depends_on",
    "volumes",
    "ports",
}
COMPOSE_BUILD_KEYS = {"context", "dockerfile"}
COMPOSE_HEALTHCHECK_KEYS = {"test", "interval", "timeout", "retries", "start_period", "disable"}
COMPOSE_DEPENDS_ON = {"condition"}
COMPOSE_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}

_INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
)


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@cache
def _compose() -> dict[str, Any]:
    loaded = _load(COMPOSE_FILE)
    assert isinstance(loaded, dict)
    return loaded


def _services() -> dict[str, Any]:
    services = _compose()["services"]
    assert isinstance(services, dict)
    return services


def _env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f".env.example: not NAME=value: {line!r}"
        values[name.strip()] = value.strip()
    return values


def _interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR:?error}` against `env` (a missing
    required variable fails the test, as it would stop `docker compose up`)."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        value = env.get(name)
        if op in (":?", "?"):
            assert value, f"{name} is required by the compose file but not in .env.example"
            return value
        if op in (":-", "-"):
            return value if value else arg
        return value or ""

    return _INTERPOLATION.sub(substitute, text.replace("$$", "\x00")).replace("\x00", "$")


def _environment(service: str) -> dict[str, str]:
    """A service's environment as its container would see it with .env.example as .env."""
    raw = _services()[service].get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.partition("=")[::2] for item in raw)
    env = _env_example()
    return {str(k): _interpolate("" if v is None else str(v), env) for k, v in raw.items()}


def _known_env(*classes: type[Any]) -> set[str]:
    """The environment variables the settings dataclasses read (those with a parser)."""
    names: set[str] = set()
    for cls in classes:
        for spec in fields(cls):
            if str(spec.type) in _PARSERS:
                names.add(spec.metadata.get("env", env_name(spec.name)))
    return names


def _bind_mounts(service: Mapping[str, Any]) -> Iterator[tuple[Path, str]]:
    """(host path, container path) of each bind mount (short or long syntax)."""
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            target = rest.split(":")[0]
        else:
            if volume.get("type") != "bind":
                continue
            source, target = volume["source"], volume["target"]
        if source.startswith((".", "/")):
            yield (COMPOSE_DIR / source).resolve(), target


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


# ---- the compose file itself -------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(_compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )


def test_compose_file_uses_nothing_newer_than_the_compose_the_readme_states() -> None:
    readme = (DEPLOY / "README.md").read_text()
    assert f"Docker Compose v2 ({MIN_COMPOSE} or newer)" in readme
    compose = _compose()
    assert "version" not in compose, "`version:` is obsolete in Compose v2 (it warns)"
    top = {k for k in compose if not k.startswith("x-")}
    assert top <= COMPOSE_TOP_LEVEL, f"top-level keys newer than {MIN_COMPOSE}: {top}"
    for name, service in _services().items():
        newer = set(service) - COMPOSE_SERVICE_KEYS
        assert not newer, f"{name}: keys past Compose {MIN_COMPOSE}'s list: {sorted(newer)}"
        assert set(service.get("build", {})) <= COMPOSE_BUILD_KEYS, name
        assert set(service.get("healthcheck", {})) <= COMPOSE_HEALTHCHECK_KEYS, name
        depends = service.get("depends_on", {})
        for dependency in depends if isinstance(depends, dict) else ():
            assert set(depends[dependency]) <= COMPOSE_DEPENDS_ON, f"{name} -> {dependency}"
            assert depends[dependency]["condition"] in COMPOSE_CONDITIONS, name


def test_stack_has_the_expected_services() -> None:
    expected = {
        "postgres",
        "migrate",
        "bootstrap",
        "dispatch-api",
        *BRIDGES,
        "lb",
        "otel-collector",
        "jaeger",
        "prometheus",
        "alertmanager",
        "grafana",
    }
    assert expected <= set(_services())


def test_images_are_pinned() -> None:
    for name, service in _services().items():
        image = service.get("image")
        assert image, f"{name}: no image"
        repository, _, tag = image.rpartition(":")
        assert repository, f"{name}: image {image!r} has no repository"
        assert tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest", f"{name}: image {image!r} is not pinned"
        if "build" not in service:
            assert re.search(r"\d", tag), f"{name}: image tag {tag!r} names no version"


def test_app_services_build_the_repository_image() -> None:
    for name in ("dispatch-api", *BRIDGES, *ONE_SHOTS):
        build = _services()[name]["build"]
        context = (COMPOSE_DIR / build["context"]).resolve()
        assert context == ROOT, f"{name}: build context {context} is not the repository root"
        assert (context / build["dockerfile"]).is_file()
    images = {_services()[n]["image"] for n in ("dispatch-api", *BRIDGES, *ONE_SHOTS)}
    assert len(images) == 1, f"one image for every app service, got {images}"


def test_every_mounted_file_exists_in_the_repository() -> None:
    mounts = 0
    for name, service in _services().items():
        for source, target in _bind_mounts(service):
            mounts += 1
            assert source.exists(), f"{name}: mounts {source} at {target}, which does not exist"
            assert ROOT in source.parents, f"{name}: mounts {source} from outside the repository"
    assert mounts >= 8


def test_every_depends_on_names_a_service() -> None:
    services = _services()
    for name, service in services.items():
        depends = service.get("depends_on", {})
        for dependency in depends if isinstance(depends, list) else depends.keys():
            assert dependency in services, f"{name}: depends on unknown service {dependency!r}"
            assert dependency != name


def test_start_up_order() -> None:
    def condition(service: str, dependency: str) -> str:
        value: str = _services()[service]["depends_on"][dependency]["condition"]
        return value

    assert condition("migrate", "postgres") == "service_healthy"
    assert condition("bootstrap", "migrate") == "service_completed_successfully"
    assert condition("dispatch-api", "migrate") == "service_completed_successfully"
    for bridge in BRIDGES:
        assert condition(bridge, "bootstrap") == "service_completed_successfully"
        assert condition(bridge, "dispatch-api") == "service_healthy"
        assert condition("lb", bridge) == "service_healthy"


def test_long_running_services_have_healthchecks_and_one_shots_do_not() -> None:
    for name in ("postgres", "dispatch-api", *BRIDGES, "lb"):
        test = _services()[name]["healthcheck"]["test"]
        assert test, name
        assert test[0] in ("CMD", "CMD-SHELL"), name
    for name in ("dispatch-api", *BRIDGES):
        assert "/healthz" in " ".join(_services()[name]["healthcheck"]["test"])
    for name in ONE_SHOTS:
        assert _services()[name]["healthcheck"] == {"disable": True}
        assert _services()[name]["restart"] == "no"


def test_commands_are_the_product_entrypoints() -> None:
    assert _services()["migrate"]["command"] == ["migrate"]
    assert _services()["dispatch-api"]["command"] == ["serve-api"]
    for bridge in BRIDGES:
        assert _services()[bridge]["command"] == ["serve-bridge"]
        # drain: DISPATCH_DRAIN_TIMEOUT_S must fit in the stop grace period
        grace = int(_services()[bridge]["stop_grace_period"].rstrip("s"))
        assert grace > float(_environment(bridge)["DISPATCH_DRAIN_TIMEOUT_S"])


def test_stop_grace_period_covers_each_services_drain() -> None:
    """On SIGTERM each service serves for DISPATCH_DRAIN_DELAY_S, then gives requests in flight
    DISPATCH_DRAIN_TIMEOUT_S, as its own settings loader reads them: compose must wait longer
    before it kills the container."""
    api = load_api_settings(_environment("dispatch-api"))
    drains = {"dispatch-api": api.drain_delay_s + api.drain_timeout_s}
    for bridge in BRIDGES:
        settings = load_bridge_settings(_environment(bridge))
        drains[bridge] = settings.drain_delay_s + settings.drain_timeout_s
    for name, drain_s in drains.items():
        assert "DISPATCH_DRAIN_TIMEOUT_S" in _environment(name), f"{name}: drain left to default"
        grace = int(_services()[name]["stop_grace_period"].rstrip("s"))
        assert grace > drain_s, name


def test_bootstrap_script_is_mounted_and_run() -> None:
    bootstrap = _services()["bootstrap"]
    mounts = dict((target, source) for source, target in _bind_mounts(bootstrap))
    script = bootstrap["entrypoint"][-1]
    assert bootstrap["entrypoint"][0] == "python"
    assert mounts[script] == COMPOSE_DIR / "bootstrap_principals.py"


# ---- settings: only names the product reads, values it accepts ---------------------------


def test_bridges_use_only_known_bridge_settings() -> None:
    known = _known_env(BridgeSettings, TracingSettings)
    for bridge in BRIDGES:
        dispatch = {k for k in _environment(bridge) if k.startswith("DISPATCH_")}
        assert dispatch <= known, f"{bridge}: unknown settings {sorted(dispatch - known)}"


def test_dispatch_api_and_migrate_use_only_known_api_settings() -> None:
    known = _known_env(ApiSettings, TracingSettings)
    for name in ("dispatch-api", "migrate"):
        dispatch = {k for k in _environment(name) if k.startswith("DISPATCH_")}
        assert dispatch <= known, f"{name}: unknown settings {sorted(dispatch - known)}"


def test_no_other_variables_than_documented_ones() -> None:
    for name in ("dispatch-api", *BRIDGES, *ONE_SHOTS):
        others = {k for k in _environment(name) if not k.startswith("DISPATCH_")}
        assert not others, f"{name}: non-DISPATCH_ variables {sorted(others)}"


def test_bridge_settings_load_from_the_compose_environment() -> None:
    for bridge in BRIDGES:
        env = _environment(bridge)
        settings = load_bridge_settings(env)
        assert settings.host == "0.0.0.0"
        assert settings.gateway_token is not None
        assert settings.agents, "no agent keys"
        api = urlsplit(settings.api_url)
        assert api.hostname == "dispatch-api"
        assert api.port == load_api_settings(_environment("dispatch-api")).api_port
        tracing = build_settings(TracingSettings, env, {}, where="[tracing]")
        assert tracing.exporter == "otlp"


def test_api_settings_load_from_the_compose_environment() -> None:
    for name in ("dispatch-api", "migrate"):
        settings = load_api_settings(_environment(name))
        assert settings.database_url is not None
        url = urlsplit(settings.database_url.reveal())
        assert url.scheme in ("postgres", "postgresql")
        assert url.hostname == "postgres"
    api = load_api_settings(_environment("dispatch-api"))
    assert api.api_host == "0.0.0.0"
    ports = _services()["dispatch-api"]["ports"]
    assert any(p.endswith(f":{api.api_port}") for p in ports)


def test_dispatch_api_serves_the_console_with_fleet_wide_tool_health_and_jaeger_links() -> None:
    api = load_api_settings(_environment("dispatch-api"))
    services = _services()

    assert urlsplit(api.prometheus_url or "").hostname == "prometheus"
    assert urlsplit(api.prometheus_url or "").port == 9090
    assert "127.0.0.1:9090:9090" in services["prometheus"]["ports"]
    # A link the operator's browser follows: Jaeger's UI on its published host port.
    assert api.trace_ui_url == "http://localhost:16686/trace/{trace_id}"
    assert "127.0.0.1:16686:16686" in services["jaeger"]["ports"]
    assert "127.0.0.1:8081:8081" in services["dispatch-api"]["ports"]


def test_all_replicas_share_one_configuration() -> None:
    first, *others = (_environment(b) for b in BRIDGES)
    assert all(other == first for other in others)


def test_gateway_token_is_the_one_bootstrap_creates() -> None:
    token = _environment("bootstrap")["DISPATCH_GATEWAY_TOKEN"]
    assert len(token) >= 32
    for bridge in BRIDGES:
        assert _environment(bridge)["DISPATCH_GATEWAY_TOKEN"] == token
    assert (
        _environment("bootstrap")["DISPATCH_DATABASE_URL"]
        == _environment("dispatch-api")["DISPATCH_DATABASE_URL"]
    )


def test_env_example_agent_key_matches_its_digest() -> None:
    env = _env_example()
    digest = hashlib.sha256(env["DISPATCH_AGENT_KEY"].encode()).hexdigest()
    assert env["DISPATCH_AGENT_KEYS"].rsplit(":", 1)[1] == digest


def test_secrets_come_from_the_env_file_only() -> None:
    text = COMPOSE_FILE.read_text()
    for name in ("DISPATCH_GATEWAY_TOKEN", "DISPATCH_AGENT_KEYS", "POSTGRES_PASSWORD"):
        assert f"${{{name}:?" in text, f"{name} must be required from .env, not defaulted"
    for value in _env_example().values():
        if len(value) >= 16:
            assert value not in text, "a .env.example value is hard-coded in the compose file"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "**/.env" in ignored


def test_traces_go_to_the_collector() -> None:
    collector_port = _host_port(
        _load(COLLECTOR)["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    )[1]
    for name in ("dispatch-api", *BRIDGES):
        env = _environment(name)
        assert env["DISPATCH_TRACE_EXPORTER"] == "otlp"
        endpoint = urlsplit(env["DISPATCH_OTLP_ENDPOINT"])
        assert endpoint.hostname == "otel-collector"
        assert endpoint.port == collector_port
        # an explicit endpoint is used as is by the OTLP/HTTP exporter: it needs the path
        assert endpoint.path == "/v1/traces"


# ---- what the stack mounts -----------------------------------------------------------------


def test_prometheus_config_parses_and_names_its_rules() -> None:
    config = _load(PROMETHEUS)
    rule_files = config["rule_files"]
    assert rule_files
    for pattern in rule_files:
        assert list(PROMETHEUS.parent.glob(pattern)), f"no rule file matches {pattern}"
    assert (PROMETHEUS.parent / "rules" / RULES.name) == RULES
    assert RULES.is_file()
    # the container sees rules/ next to prometheus.yml, as in the repository
    mounts = {target: source for source, target in _bind_mounts(_services()["prometheus"])}
    config_target = next(t for t, s in mounts.items() if s == PROMETHEUS)
    rules_target = next(t for t, s in mounts.items() if s == RULES.parent)
    assert Path(rules_target) == Path(config_target).parent / "rules"


def test_prometheus_scrapes_dispatch_api_and_both_bridges_and_alerts() -> None:
    config = _load(PROMETHEUS)
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    expected = {"dispatch-api:8081", *(f"{b}:8080" for b in BRIDGES)}
    assert expected <= targets
    services = set(_services())
    for target in targets:
        host = _host_port(target)[0]
        assert host == "localhost" or host in services, f"scrape target {target}: no such service"
    managers = [
        target
        for manager in config["alerting"]["alertmanagers"]
        for static in manager["static_configs"]
        for target in static["targets"]
    ]
    assert managers == ["alertmanager:9093"]


def test_promtool_check_config_passes() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is needed (Debian package prometheus; see .ci/ensure-tools)"
    result = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_config_routes_to_defined_receivers() -> None:
    config = _load(ALERTMANAGER)
    receivers = {r["name"] for r in config["receivers"]}
    route = config["route"]
    assert route["receiver"] in receivers
    for child in route.get("routes", []):
        assert child["receiver"] in receivers


def test_collector_wires_otlp_receiver_batch_processor_and_jaeger_exporter() -> None:
    config = _load(COLLECTOR)
    pipeline = config["service"]["pipelines"]["traces"]
    for section, key in (
        ("receivers", "receivers"),
        ("processors", "processors"),
        ("exporters", "exporters"),
    ):
        assert pipeline[key], f"traces pipeline has no {key}"
        for name in pipeline[key]:
            assert name in config[section], f"{name} is used but not defined in {section}"
    assert "otlp" in pipeline["receivers"]
    assert "http" in config["receivers"]["otlp"]["protocols"]
    assert "batch" in pipeline["processors"]
    jaeger = [n for n in pipeline["exporters"] if n.split("/")[0] == "otlp"]
    assert jaeger, "no OTLP exporter in the traces pipeline"
    host, port = _host_port(config["exporters"][jaeger[0]]["endpoint"])
    assert host == "jaeger"
    assert host in _services()
    assert port == 4317  # Jaeger's OTLP/gRPC receiver
    mounts = dict(_bind_mounts(_services()["otel-collector"]))
    target = mounts[COLLECTOR]
    assert any(target in arg for arg in _services()["otel-collector"]["command"])


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboards() -> None:
    datasources = _load(GRAFANA / "datasources" / "prometheus.yml")["datasources"]
    prometheus = next(d for d in datasources if d["type"] == "prometheus")
    assert prometheus["uid"] == "prometheus"
    assert urlsplit(prometheus["url"]).hostname == "prometheus"
    providers = [
        provider
        for path in sorted((GRAFANA / "dashboards").glob("*.yml"))
        for provider in _load(path)["providers"]
    ]
    assert providers
    mounts = {source: target for source, target in _bind_mounts(_services()["grafana"])}
    assert mounts[GRAFANA] == "/etc/grafana/provisioning"
    dashboards_target = mounts[DEPLOY / "grafana" / "dashboards"]
    assert {p["options"]["path"] for p in providers} == {dashboards_target}


def test_load_balancer_sends_to_both_bridges() -> None:
    config = NGINX.read_text()
    servers = re.findall(r"^\s*server\s+([\w.-]+:\d+)", config, flags=re.MULTILINE)
    assert sorted(servers) == sorted(f"{b}:8080" for b in BRIDGES)
    listen = re.search(r"^\s*listen\s+(\d+);", config, flags=re.MULTILINE)
    assert listen is not None
    assert any(p.endswith(f":{listen[1]}") for p in _services()["lb"]["ports"])
    assert (NGINX, "/etc/nginx/nginx.conf") in list(_bind_mounts(_services()["lb"]))
    assert "/lb-health" in " ".join(_services()["lb"]["healthcheck"]["test"])


def test_deploy_readme_walks_the_stack() -> None:
    readme = (DEPLOY / "README.md").read_text()
    for needle in (
        "docker compose -f deploy/compose/docker-compose.yml up",
        "cp deploy/compose/.env.example deploy/compose/.env",
        "http://localhost:16686",
        "http://localhost:3000",
        "http://localhost:9090",
        "/v1/tools/",
        "DispatchIdempotencyConflictsSpiking",
        "max_prepared_statements",
        "## Kubernetes",
    ):
        assert needle in readme, f"deploy/README.md does not mention {needle!r}"


@pytest.mark.parametrize("path", [COMPOSE_FILE, PROMETHEUS, COLLECTOR, ALERTMANAGER])
def test_yaml_has_no_tabs_or_duplicate_top_level_keys(path: Path) -> None:
    text = path.read_text()
    assert "\t" not in text
    top = re.findall(r"^([A-Za-z_][\w-]*):", text, flags=re.MULTILINE)
    assert len(top) == len(set(top)), f"{path.name}: duplicate top-level keys"
