"""The approval policy: which agent tool calls a person must approve first, and who may.

Rules are tried in order and the first that matches decides: `require` (a person must say
yes) or `allow` (an exemption before a broader rule). No match: no approval needed. Pure
values; dispatch-api evaluates them inside the action's transaction, with the ticket locked.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ._model import Action, Priority, Role, State, Ticket
from ._tool_names import ACTION_TOOLS

#: The actions with a route of their own (POST /v1/tickets/{id}/{action}): only their
#: tools can be gated, since only those calls pass through the gate.
GATED_ACTIONS = (
    Action.SCHEDULE,
    Action.DISPATCH,
    Action.ARRIVE,
    Action.COMPLETE,
    Action.HOLD,
    Action.RESUME,
    Action.CANCEL,
    Action.CONTACT_ATTEMPT,
    Action.ESCALATE,
    Action.MITIGATE,
)
GATEABLE_TOOLS = tuple(ACTION_TOOLS[a] for a in GATED_ACTIONS)
APPROVER_ROLES = (Role.SUPERVISOR, Role.DISPATCHER)
MAX_EXPIRY_MINUTES = 10080  # a week

_NAME = re.compile(r"[a-z0-9-]{1,64}")
_RULE_KEYS = frozenset({"name", "tool", "decision", "approvers", "expires_after_minutes", "when"})
_WHEN_KEYS = frozenset({"priority", "state", "emergency_bypass"})


class PolicyError(ValueError):
    """A rule of `[approvals]` is malformed; the message names the rule and the key."""


@dataclass(frozen=True, slots=True)
class ApprovalRule:
    name: str
    tool: str
    require: bool = True
    approvers: tuple[Role, ...] = APPROVER_ROLES
    expires_after_minutes: int = 60
    #: Conditions; None matches anything.
    priority: tuple[Priority, ...] | None = None
    state: tuple[State, ...] | None = None
    emergency_bypass: bool | None = None

    def to_json(self) -> dict[str, Any]:
        """The rule as the TOML states it (conditions given only), with its version."""
        when: dict[str, Any] = {}
        if self.priority is not None:
            when["priority"] = [str(p) for p in self.priority]
        if self.state is not None:
            when["state"] = [str(s) for s in self.state]
        if self.emergency_bypass is not None:
            when["emergency_bypass"] = self.emergency_bypass
        body: dict[str, Any] = {
            "name": self.name,
            "tool": self.tool,
            "decision": "require" if self.require else "allow",
            "approvers": [str(r) for r in self.approvers],
            "expires_after_minutes": self.expires_after_minutes,
            "when": when,
        }
        return {**body, "version": _version(body)}

    @property
    def version(self) -> str:
        """First 12 hex chars of sha256 over the rule's canonical JSON: an approval names
        the exact rule it was asked under, so a changed rule is visible in its record."""
        version: str = self.to_json()["version"]
        return version

    def matches(self, tool_name: str, arguments: Mapping[str, Any], ticket: Ticket) -> bool:
        if tool_name != self.tool:
            return False
        if self.priority is not None and ticket.priority not in self.priority:
            return False
        if self.state is not None and ticket.state not in self.state:
            return False
        if self.emergency_bypass is not None:
            bypass = bool(arguments.get("bypass_reason"))
            if bypass is not self.emergency_bypass:
                return False
        return True


def _version(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class ApprovalPolicy:
    rules: tuple[ApprovalRule, ...]

    @classmethod
    def defaults(cls) -> ApprovalPolicy:
        """Shipped when the configuration has no `[approvals]` table."""
        return cls(
            (
                ApprovalRule("cancel", "ticket.cancel"),
                ApprovalRule(
                    "emergency-dispatch",
                    "ticket.dispatch",
                    approvers=(Role.SUPERVISOR,),
                    expires_after_minutes=15,
                    emergency_bypass=True,
                ),
            )
        )

    def to_json(self) -> dict[str, Any]:
        return {"rules": [r.to_json() for r in self.rules]}

    @property
    def tools(self) -> tuple[str, ...]:
        """Tools some rule may gate, in rule order, once each."""
        return tuple(dict.fromkeys(r.tool for r in self.rules if r.require))


def required_approval(
    policy: ApprovalPolicy, tool_name: str, arguments: Mapping[str, Any], ticket: Ticket
) -> ApprovalRule | None:
    """The rule that requires approval of this call, or None when none is needed: the first
    rule that matches decides (an `allow` rule matching first exempts the call)."""
    for rule in policy.rules:
        if rule.matches(tool_name, arguments, ticket):
            return rule if rule.require else None
    return None


def parse_policy(raw: Any) -> ApprovalPolicy:
    """The policy of an `[approvals]` table (`{"rules": [...]}`); None gives the defaults.

    Raises PolicyError naming the rule (by name, else by position) and the key at fault.
    """
    if raw is None:
        return ApprovalPolicy.defaults()
    if not isinstance(raw, Mapping):
        raise PolicyError("[approvals]: expected a table")
    unknown = sorted(set(raw) - {"rules"})
    if unknown:
        raise PolicyError(f"[approvals]: unknown key {unknown[0]!r}; it holds only 'rules'")
    rules_raw = raw.get("rules", [])
    if not isinstance(rules_raw, list):
        raise PolicyError("[approvals].rules: expected an array of tables ([[approvals.rules]])")
    rules: list[ApprovalRule] = []
    for index, item in enumerate(rules_raw):
        rule = _parse_rule(item, index)
        if any(r.name == rule.name for r in rules):
            raise PolicyError(f"{_where(rule.name, index)}: name: duplicate rule name")
        rules.append(rule)
    return ApprovalPolicy(tuple(rules))


def _where(name: Any, index: int) -> str:
    if isinstance(name, str) and _NAME.fullmatch(name):
        return f"[approvals] rule {name!r} (#{index + 1})"
    return f"[approvals] rule #{index + 1}"


def _parse_rule(item: Any, index: int) -> ApprovalRule:
    if not isinstance(item, Mapping):
        raise PolicyError(f"{_where(None, index)}: expected a table")
    where = _where(item.get("name"), index)

    def fail(key: str, message: str) -> PolicyError:
        return PolicyError(f"{where}: {key}: {message}")

    unknown = sorted(set(item) - _RULE_KEYS)
    if unknown:
        raise fail(unknown[0], f"unknown key; known: {', '.join(sorted(_RULE_KEYS))}")
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise fail("name", "required, 1-64 characters of a-z, 0-9 and -")
    tool = item.get("tool")
    if tool not in GATEABLE_TOOLS:
        raise fail("tool", f"{tool!r} is not a tool that acts on a ticket; one of {GATEABLE_TOOLS}")
    decision = item.get("decision", "require")
    if decision not in ("require", "allow"):
        raise fail("decision", "must be 'require' or 'allow'")
    approvers = item.get("approvers", [str(r) for r in APPROVER_ROLES])
    allowed = [str(r) for r in APPROVER_ROLES]
    if (
        not isinstance(approvers, list)
        or not approvers
        or any(a not in allowed for a in approvers)
        or len(set(approvers)) != len(approvers)
    ):
        raise fail("approvers", f"a non-empty list of distinct roles among {allowed}")
    expiry = item.get("expires_after_minutes", 60)
    if isinstance(expiry, bool) or not isinstance(expiry, int):
        raise fail("expires_after_minutes", "must be an integer")
    if not 1 <= expiry <= MAX_EXPIRY_MINUTES:
        raise fail("expires_after_minutes", f"must be between 1 and {MAX_EXPIRY_MINUTES}")
    when = item.get("when", {})
    if not isinstance(when, Mapping):
        raise fail("when", "expected a table")
    unknown = sorted(set(when) - _WHEN_KEYS)
    if unknown:
        raise fail(f"when.{unknown[0]}", f"unknown condition; known: {sorted(_WHEN_KEYS)}")
    bypass = when.get("emergency_bypass")
    if bypass is not None and not isinstance(bypass, bool):
        raise fail("when.emergency_bypass", "must be true or false")
    return ApprovalRule(
        name=name,
        tool=tool,
        require=decision == "require",
        approvers=tuple(Role(a) for a in approvers),
        expires_after_minutes=expiry,
        priority=_members(when, "priority", Priority, fail),
        state=_members(when, "state", State, fail),
        emergency_bypass=bypass,
    )


def _members(when: Mapping[str, Any], key: str, kind: Any, fail: Any) -> Any:
    values = when.get(key)
    if values is None:
        return None
    allowed = [str(v) for v in kind]
    if not isinstance(values, list) or not values or any(v not in allowed for v in values):
        raise fail(f"when.{key}", f"a non-empty list among {allowed}")
    return tuple(kind(v) for v in values)
