"""What a tool is: a name, schemas, annotations, who may call it, and a handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from dispatch_client import CallContext, DispatchClient

from ._names import safe_name
from ._schemas import ArgumentValidator, input_schema, output_schema

#: A handler gets the client, the call's context and validated arguments (nulls dropped),
#: and returns the tool's structured result (which conforms to the output schema).
Handler = Callable[[DispatchClient, CallContext, dict[str, Any]], Awaitable[dict[str, Any]]]

ROLES = frozenset({"dispatcher", "technician", "supervisor"})


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    title: str
    description: str
    roles: frozenset[str]
    handler: Handler
    read_only: bool = False
    destructive: bool = False
    idempotent: bool = False
    #: Its arguments carry content inline (base64): it gets the large body limit.
    carries_content: bool = False
    input_schema: dict[str, Any] = field(init=False, repr=False)
    output_schema: dict[str, Any] = field(init=False, repr=False)
    validator: ArgumentValidator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        safe_name(self.name)  # ValueError: a tool every model can call, or none
        unknown = self.roles - ROLES
        if unknown:
            raise ValueError(f"{self.name}: unknown roles {sorted(unknown)}")
        schema = input_schema(self.name)
        object.__setattr__(self, "input_schema", schema)
        object.__setattr__(self, "output_schema", output_schema(self.name))
        object.__setattr__(self, "validator", ArgumentValidator(self.name, schema))

    @property
    def alias(self) -> str:
        """The safe name (no dots), for OpenAI, Anthropic and MCP (`tech.complete` ->
        `tech_complete`); see _names.py."""
        return safe_name(self.name)

    @property
    def may_need_approval(self) -> bool:
        """It calls a ticket action route, where dispatch-api's approval policy may hold the
        call for a person (the policy, not the bridge, decides which calls)."""
        return bool(getattr(self.handler, "action_route", False))

    @property
    def ticket_argument(self) -> str | None:
        return "ticket_id" if "ticket_id" in self.input_schema.get("properties", {}) else None

    def allowed(self, role: str) -> bool:
        return role in self.roles
