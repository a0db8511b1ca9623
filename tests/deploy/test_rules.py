"""The Prometheus rules in deploy/prometheus/: valid, unit-tested with promtool, every alert
annotated and linked to a runbook that exists, and every metric they read exposed by the
running services.

The helpers here (promtool, metric names in PromQL, the live services' metric names, runbook
links) serve tests/deploy/test_dashboards.py too.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any, cast

import yaml
from prometheus_client.parser import text_string_to_metric_families

from testkit.api import COMPLETE_TICKET, WINDOW
from tests.bridge import conftest as bridge_harness
from tests.bridge.conftest import Bridge

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules" / "dispatch-bridge.rules.yml"
RULES_TESTS = ROOT / "deploy" / "prometheus" / "tests" / "dispatch-bridge.rules.test.yml"
RUNBOOK_INDEX = ROOT / "docs" / "runbooks" / "README.md"
REPO_URL = "https://github.com/dispatch-bridge/dispatch-bridge/blob/main/"
SEVERITIES = frozenset({"page", "ticket"})
#: Codes the tool-call SLO counts as failures (the rest are the caller's own mistakes).
FAILURE_CODES = frozenset(
    {"upstream_timeout", "upstream_unavailable", "upstream_error", "deadline_exceeded", "internal"}
)
PROMQL_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"bool", "offset", "inf", "nan"}
)

# The bridge harness (real bridge -> fault proxy -> real dispatch-api), as in tests/bridge/.
bridge = bridge_harness.bridge
bridge_overrides = bridge_harness.bridge_overrides
bridge_retry = bridge_harness.bridge_retry


# --- helpers shared with test_dashboards.py ---------------------------------------------


async def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        ["promtool", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )


def load_rules() -> list[dict[str, Any]]:
    """Every rule of the rules file, recording and alerting, in order."""
    document = cast(dict[str, Any], yaml.safe_load(RULES.read_text()))
    return [rule for group in document["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in load_rules() if "alert" in rule]


def recorded_names() -> set[str]:
    return {str(rule["record"]) for rule in load_rules() if "record" in rule}


def metric_names(expr: str) -> set[str]:
    """The metric (and recording rule) names a PromQL expression reads."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # label lists
    names = re.findall(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:]|\s*\()", text)
    return {name for name in names if name.lower() not in PROMQL_KEYWORDS}


def github_slug(heading: str) -> str:
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def link_target_exists(url: str) -> bool:
    """A repository URL names a file that exists, and its #anchor (if any) a heading of it."""
    if not url.startswith(REPO_URL):
        return False
    path, _, anchor = url.removeprefix(REPO_URL).partition("#")
    target = ROOT / path
    if not target.is_file():
        return False
    if not anchor:
        return True
    headings = re.findall(r"^#+ (.+)$", target.read_text(), re.M)
    return anchor in {github_slug(h) for h in headings}


async def _decided_approval(bridge: Bridge) -> None:
    """An agent's gated cancel (as the bridge sends it), denied, and one left pending: the
    approval series exist."""
    for decide in (True, False):
        created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
        key = str(uuid.uuid4())
        agent = {"X-Actor-Type": "agent", "X-Actor-Id": "agent-sup", "X-Actor-Role": "supervisor"}
        asked = await bridge.api.request(
            "POST",
            f"/v1/tickets/{created.body['result']['ticket']['id']}/cancel",
            json={"reason": "duplicate"},
            as_="gateway",
            key=key,
            headers={**agent, "X-Tool-Name": "ticket.cancel", "X-Request-ID": key},
        )
        assert asked.status == 202, asked.body
        if decide:
            path = f"/v1/approvals/{asked.body['approval']['id']}/deny"
            denied = await bridge.api.request("POST", path, json={"reason": "no"})
            assert denied.status == 200, denied.body


async def exposed_metrics(bridge: Bridge) -> set[str]:
    """Sample names both services expose after a retried call, a state change, a failed
    call and gated calls (one decided, one pending), so that labelled series exist."""
    bridge.proxy.drop_responses = 1  # the first answer is lost: one retry
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    tid = created.body["result"]["ticket"]["id"]
    await bridge.invoke("ticket.schedule", {"ticket_id": tid, **WINDOW})
    refused = await bridge.invoke("tech.arrive", {"ticket_id": tid})  # not dispatched yet
    assert refused.body["error"]["code"] == "invalid_transition"
    await _decided_approval(bridge)
    names: set[str] = set()
    for reply in (
        await bridge.request("GET", "/metrics", as_=""),
        await bridge.api.request("GET", "/metrics", as_=""),
    ):
        assert reply.status == 200
        for family in text_string_to_metric_families(reply.raw.decode()):
            names.update(sample.name for sample in family.samples)
    return names


# --- tests ------------------------------------------------------------------------------


async def test_promtool_accepts_the_rules_file() -> None:
    checked = await promtool("check", "rules", str(RULES))

    assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_the_promtool_unit_tests_of_the_rules_pass() -> None:
    tested = await promtool("test", "rules", str(RULES_TESTS))

    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_unit_test_that_fires_it_and_one_that_does_not() -> None:
    document = cast(dict[str, Any], yaml.safe_load(RULES_TESTS.read_text()))
    cases = [case for test in document["tests"] for case in test.get("alert_rule_test", [])]
    firing = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    names = {rule["alert"] for rule in alerts()}

    assert len(names) >= 9
    assert firing == names
    assert quiet == names


def test_every_alert_has_a_severity_a_summary_a_description_and_an_existing_runbook() -> None:
    for rule in alerts():
        annotations = rule.get("annotations", {})
        assert rule.get("labels", {}).get("severity") in SEVERITIES, rule["alert"]
        assert {"summary", "description", "runbook_url"} <= set(annotations), rule["alert"]
        assert all(str(annotations[key]).strip() for key in annotations), rule["alert"]
        assert link_target_exists(annotations["runbook_url"]), annotations["runbook_url"]


def test_the_runbook_index_alerts_exist_with_the_documented_expression() -> None:
    table = re.findall(
        r"^\| \[(RB\d)[^]]*\]\(([^)]+)\) \| `(\w+)` \| `(.+)` \|$",
        RUNBOOK_INDEX.read_text(),
        re.M,
    )
    by_name = {rule["alert"]: rule for rule in alerts()}

    assert len(table) == 5
    for _, runbook_file, name, expr in table:
        rule = by_name[name]
        assert " ".join(rule["expr"].split()) == expr
        assert rule["annotations"]["runbook_url"] == f"{REPO_URL}docs/runbooks/{runbook_file}"


def test_the_tool_slo_counts_exactly_the_failure_codes_and_every_burn_rate_window() -> None:
    rules = {rule["record"]: rule["expr"] for rule in load_rules() if "record" in rule}
    windows = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")

    for window in windows:
        expr = rules[f"tool:invocation_failures:ratio_rate{window}"]
        [codes] = re.findall(r'code=~"([^"]+)"', expr)
        assert set(codes.split("|")) == FAILURE_CODES
        assert expr.count(f"[{window}]") == 2


def test_the_metric_name_reader_skips_functions_labels_and_keywords() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (tool, le) (rate(tool_latency_ms_bucket{tool="a_b"}'
        "[5m]))) > 1e3 unless on (tool) tool:invocations:rate5m and ignoring(code) group_left "
        "min_over_time(tool_calls_in_flight[10m:1m]) offset 5m"
    )

    assert metric_names(expr) == {
        "tool_latency_ms_bucket",
        "tool:invocations:rate5m",
        "tool_calls_in_flight",
    }


async def test_every_metric_the_rules_read_is_exposed_by_the_running_services(
    bridge: Bridge,
) -> None:
    exposed = await exposed_metrics(bridge)
    recorded = recorded_names()
    read = {name for rule in load_rules() for name in metric_names(rule["expr"])}

    assert read - recorded, "no raw metrics found: the name reader is broken"
    assert read - recorded <= exposed, sorted(read - recorded - exposed)
    assert {name for name in read if ":" in name} <= recorded
