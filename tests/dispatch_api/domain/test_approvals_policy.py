"""The approval policy as pure values: defaults, first match wins, exemptions, versions, and
bad rules refused naming the rule and the key."""

from __future__ import annotations

from typing import Any

import pytest

from dispatch_api.domain import (
    ApprovalPolicy,
    PolicyError,
    Priority,
    State,
    Ticket,
    parse_policy,
    required_approval,
)

P1_READY = Ticket("t-1", State.READY_TO_SCHEDULE, Priority.P1)
P3_SCHEDULED = Ticket("t-2", State.SCHEDULED, Priority.P3)


def deciding(policy: ApprovalPolicy, tool: str, ticket: Ticket) -> str | None:
    """The name of the rule that requires approval of this call, if any."""
    found = required_approval(policy, tool, {}, ticket)
    return None if found is None else found.name


def rule(name: str, tool: str = "ticket.cancel", **fields: Any) -> dict[str, Any]:
    return {"name": name, "tool": tool, **fields}


def test_without_an_approvals_table_cancel_and_the_emergency_dispatch_need_approval() -> None:
    policy = parse_policy(None)

    cancel = required_approval(policy, "ticket.cancel", {"reason": "x"}, P3_SCHEDULED)
    bypass = required_approval(
        policy, "ticket.dispatch", {"technician_id": "tech-1", "bypass_reason": "gas"}, P1_READY
    )
    plain = required_approval(policy, "ticket.dispatch", {}, P3_SCHEDULED)

    assert cancel is not None
    assert (cancel.name, cancel.expires_after_minutes) == ("cancel", 60)
    assert [str(r) for r in cancel.approvers] == ["supervisor", "dispatcher"]
    assert bypass is not None
    assert (bypass.name, bypass.expires_after_minutes) == ("emergency-dispatch", 15)
    assert [str(r) for r in bypass.approvers] == ["supervisor"]
    assert plain is None
    assert policy == ApprovalPolicy.defaults()


def test_an_empty_rules_list_turns_approvals_off() -> None:
    policy = parse_policy({"rules": []})

    assert required_approval(policy, "ticket.cancel", {"reason": "x"}, P3_SCHEDULED) is None


def test_the_first_matching_rule_decides() -> None:
    policy = parse_policy(
        {
            "rules": [
                rule("urgent", when={"priority": ["P1"]}, approvers=["supervisor"]),
                rule("scheduled", when={"state": ["SCHEDULED"]}, expires_after_minutes=5),
                rule("any"),
            ]
        }
    )

    other = Ticket("t-3", State.ON_HOLD, Priority.P4)
    assert deciding(policy, "ticket.cancel", P1_READY) == "urgent"
    assert deciding(policy, "ticket.cancel", P3_SCHEDULED) == "scheduled"
    assert deciding(policy, "ticket.cancel", other) == "any"
    assert deciding(policy, "ticket.hold", other) is None


def test_an_allow_rule_before_a_broader_require_exempts_what_it_matches() -> None:
    policy = parse_policy(
        {"rules": [rule("p4-free", decision="allow", when={"priority": ["P4"]}), rule("all")]}
    )

    p4 = Ticket("t-4", State.READY_TO_SCHEDULE, Priority.P4)
    assert required_approval(policy, "ticket.cancel", {}, p4) is None
    assert required_approval(policy, "ticket.cancel", {}, P3_SCHEDULED) is not None


def test_a_rule_version_is_stable_and_changes_with_the_rule() -> None:
    one = parse_policy({"rules": [rule("cancel")]}).rules[0]
    same = parse_policy({"rules": [rule("cancel")]}).rules[0]
    longer = parse_policy({"rules": [rule("cancel", expires_after_minutes=61)]}).rules[0]

    assert one.version == same.version
    assert len(one.version) == 12
    assert int(one.version, 16) >= 0
    assert longer.version != one.version
    assert one.to_json()["version"] == one.version


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        ({"rules": [rule("a", colour="red")]}, ["rule 'a' (#1)", "colour", "unknown key"]),
        ({"rules": [rule("a", tool="ticket.get")]}, ["rule 'a' (#1)", "tool", "ticket.get"]),
        ({"rules": [rule("a", approvers=[])]}, ["rule 'a' (#1)", "approvers"]),
        ({"rules": [rule("a", approvers=["technician"])]}, ["rule 'a' (#1)", "approvers"]),
        ({"rules": [rule("a"), rule("a")]}, ["rule 'a' (#2)", "name", "duplicate"]),
        ({"rules": [rule("a", expires_after_minutes=0)]}, ["expires_after_minutes", "1 and"]),
        ({"rules": [rule("a", expires_after_minutes=10081)]}, ["expires_after_minutes"]),
        ({"rules": [rule("a", decision="maybe")]}, ["rule 'a' (#1)", "decision"]),
        ({"rules": [rule("a", when={"priority": ["P9"]})]}, ["when.priority"]),
        ({"rules": [rule("a", when={"weather": "rain"})]}, ["when.weather"]),
        ({"rules": [{"tool": "ticket.cancel"}]}, ["rule #1", "name"]),
        ({"rules": [rule("a"), rule("Bad Name")]}, ["rule #2", "name"]),
        ({"rule": []}, ["[approvals]", "'rule'"]),
    ],
    ids=[
        "unknown-key",
        "unknown-tool",
        "empty-approvers",
        "bad-role",
        "duplicate-name",
        "expiry-zero",
        "expiry-too-long",
        "bad-decision",
        "bad-priority",
        "unknown-condition",
        "no-name",
        "bad-name",
        "unknown-table-key",
    ],
)
def test_a_bad_rule_is_refused_naming_the_rule_and_the_key(
    raw: dict[str, Any], names: list[str]
) -> None:
    with pytest.raises(PolicyError) as refused:
        parse_policy(raw)

    for name in names:
        assert name in str(refused.value)
