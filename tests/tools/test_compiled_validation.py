"""The compiled check (jsonschema-rs) only ever says "valid" first: what the Python validator
refuses stays refused, with the same errors, and what it accepts is accepted."""

from __future__ import annotations

from typing import Any

import pytest

from tools import ToolError, catalog
from tools._schemas import ArgumentValidator, input_schema

TICKET = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
START, END = "2031-05-01T09:00:00Z", "2031-05-01T11:00:00Z"
SCHEDULE = {"ticket_id": TICKET, "technician_id": "tech-1", "window_start": START}

#: (tool, arguments): each near a line where a compiled engine could read a schema otherwise
#: (ECMA `$` and `\s`, Unicode digits, real dates, base64 padding, formats only annotated).
CASES: list[tuple[str, dict[str, Any]]] = [
    ("ticket.get", {"ticket_id": TICKET}),
    ("ticket.get", {"ticket_id": TICKET.upper()}),
    ("ticket.get", {"ticket_id": TICKET + "\n"}),
    ("ticket.get", {"ticket_id": TICKET[:-1] + "g"}),
    ("ticket.get", {"ticket_id": TICKET, "extra": 1}),
    ("ticket.get", {}),
    ("ticket.create", {"contact_email": "a@b.example", "site_address": "1 Main St\x1c"}),
    ("ticket.create", {"contact_email": "a\ufeff@b.example"}),
    ("ticket.create", {"contact_email": "a\x85@b.example"}),
    ("ticket.create", {"contact_email": "a\u00a0@b.example"}),
    ("ticket.create", {"contact_phone": "+1 555 0100"}),
    ("ticket.create", {"contact_phone": "+\u0663\u0665\u0665 0100"}),
    ("ticket.create", {"customer_name": "Zoë\x00"}),
    ("ticket.schedule", {**SCHEDULE, "window_end": END}),
    ("ticket.schedule", {**SCHEDULE, "window_end": "2031-02-30T11:00:00Z"}),
    ("ticket.schedule", {**SCHEDULE, "window_end": "2031-05-01T24:00:00Z"}),
    ("ticket.schedule", {**SCHEDULE, "window_end": "2031-05-01T11:00:00Z\n"}),
    ("evidence.attach", {"ticket_id": TICKET, "kind": "note", "content_base64": "aGk="}),
    ("evidence.attach", {"ticket_id": TICKET, "kind": "note", "content_base64": "aGk"}),
    # Checked by pybase64 in the compiled check (schemas/_patterns.py), not the regex.
    *(
        ("evidence.attach", {"ticket_id": TICKET, "kind": "note", "content_base64": text})
        for text in ("", "Q===", "aGk=aGk=", "aGk=\n", "-_-_", "aG\u00e9=", "aGk=" * 1000)
    ),
    ("evidence.attach", {"ticket_id": TICKET, "kind": "photo", "uri": "https://x.test/a/../b"}),
    ("queue.view", {"technician_id": "tech\u0661"}),
]


def _verdict(validator: ArgumentValidator, arguments: dict[str, Any]) -> Any:
    try:
        validator.validate(arguments)
    except ToolError as error:
        return error.to_json()
    return "valid"


@pytest.mark.parametrize(("tool", "arguments"), CASES)
def test_the_compiled_check_gives_the_python_validators_verdict_and_errors(
    tool: str, arguments: dict[str, Any]
) -> None:
    schema = input_schema(tool)
    fast = ArgumentValidator(tool, schema)
    python_only = ArgumentValidator(tool, schema, compiled=False)

    assert _verdict(fast, arguments) == _verdict(python_only, arguments)


def test_the_cases_cover_both_verdicts_and_every_tool_schema_compiles() -> None:
    verdicts = {
        _verdict(ArgumentValidator(t, input_schema(t), compiled=False), a) == "valid"
        for t, a in CASES
    }
    assert verdicts == {True, False}
    assert all(tool.validator.compiled for tool in catalog())
