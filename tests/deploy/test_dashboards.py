"""The Grafana dashboards in deploy/grafana/dashboards/: valid JSON of schema 39 on the
`prometheus` datasource, every query accepted by promtool and reading only metrics the
running services expose or the rules record, unique panel ids, and runbook links that exist.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

from tests.bridge.conftest import Bridge
from tests.deploy.test_rules import (
    ROOT,
    bridge,
    bridge_overrides,
    bridge_retry,
    exposed_metrics,
    link_target_exists,
    metric_names,
    promtool,
    recorded_names,
)

DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
NAMES = ("dispatch-operations", "tool-bridge", "service-health")
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}

# The bridge harness, re-exported for pytest.
__all__ = ["bridge", "bridge_overrides", "bridge_retry"]


def load(name: str) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads((DASHBOARDS / f"{name}.json").read_text()))


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expr) of every panel target."""
    return [
        (name, panel["title"], target["expr"])
        for name in NAMES
        for panel in panels(load(name))
        for target in panel.get("targets", [])
    ]


def test_the_three_dashboards_parse_with_schema_39_and_the_prometheus_datasource() -> None:
    assert {path.stem for path in DASHBOARDS.glob("*.json")} == set(NAMES)
    for name in NAMES:
        dashboard = load(name)
        assert dashboard["uid"] == name
        assert dashboard["schemaVersion"] == 39
        assert dashboard["title"]
        for panel in panels(dashboard):
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == DATASOURCE, panel["title"]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"] == DATASOURCE, panel["title"]


def test_panel_ids_are_unique_and_panels_do_not_overlap() -> None:
    for name in NAMES:
        found = panels(load(name))
        ids = [panel["id"] for panel in found]
        cells = [
            (x, y)
            for panel in found
            for x in range(panel["gridPos"]["x"], panel["gridPos"]["x"] + panel["gridPos"]["w"])
            for y in range(panel["gridPos"]["y"], panel["gridPos"]["y"] + panel["gridPos"]["h"])
        ]

        assert len(ids) == len(set(ids)), name
        assert len(cells) == len(set(cells)), name
        assert all(panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24 for panel in found)


def test_every_runbook_link_names_an_existing_file_and_heading() -> None:
    linked: set[str] = set()
    for name in NAMES:
        for panel in panels(load(name)):
            for link in panel.get("links", []):
                assert link["title"], panel["title"]
                assert link_target_exists(link["url"]), (name, panel["title"], link["url"])
                linked.add(link["url"].rsplit("/", 1)[-1])

    assert {
        "RB1-scheduling-stuck.md",
        "RB2-completion-rejected.md",
        "RB3-idempotency-conflicts.md",
        "RB4-sla-breach.md",
        "RB5-approvals-waiting.md",
    } <= linked


def test_the_dashboards_show_what_operators_asked_for() -> None:
    exprs = {name: " ".join(q[2] for q in queries() if q[0] == name) for name in NAMES}

    for metric in ("tickets_in_state", "state_transitions_total", "sla_breach_total"):
        assert metric in exprs["dispatch-operations"]
    for metric in ("tickets_sla", "tickets_oldest_in_state_seconds"):
        assert metric in exprs["dispatch-operations"]
    for metric in ("approvals_pending", "approval_decisions_total", "approval_wait_seconds"):
        assert metric in exprs["dispatch-operations"]
    assert (
        "histogram_quantile(0.9, sum by (tool, le) (rate(approval_wait_seconds_bucket"
        in (exprs["dispatch-operations"])
    )
    for metric in ("tool_calls_in_flight", "tool_retries_total", "circuit_breaker_state"):
        assert metric in exprs["tool-bridge"]
    assert "histogram_quantile(0.5" in exprs["tool-bridge"]
    p99 = "histogram_quantile(0.99, sum by (tool, le) (rate(tool_latency_ms_bucket"
    assert p99 in exprs["tool-bridge"]
    assert "tool:invocations:rate5m" in exprs["tool-bridge"]
    for metric in ("dispatch_api:requests:rate5m", "dispatch_api_errors_total"):
        assert metric in exprs["service-health"]
    assert "histogram_quantile(0.99, sum by (route, le)" in exprs["service-health"]


async def test_promtool_accepts_every_panel_query(tmp_path: Path) -> None:
    found = queries()
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [
                    {"record": f"dashboard:q{i}", "expr": expr}
                    for i, (_, _, expr) in enumerate(found)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML

    checked = await promtool("check", "rules", str(path))

    assert len(found) >= 25
    assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_every_panel_query_reads_only_exposed_metrics_or_recorded_rules(
    bridge: Bridge,
) -> None:
    known = await exposed_metrics(bridge) | recorded_names()

    for name, title, expr in queries():
        names = metric_names(expr)
        assert names, (name, title, expr)
        assert names <= known, (name, title, sorted(names - known))
