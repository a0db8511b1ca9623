"""Argument validation: every violation comes back as path, expected and received, in one
`invalid_arguments` error the model can correct itself from."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tools import Tool, ToolError, catalog

TOOLS = catalog()
BY_NAME = {t.name: t for t in TOOLS}
TICKET_ID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
STATES = "NEW, READY_TO_SCHEDULE, SCHEDULED, DISPATCHED, ON_SITE, ON_HOLD, COMPLETED, CANCELLED"


def _refusal(tool: str, arguments: Any) -> ToolError:
    with pytest.raises(ToolError) as caught:
        BY_NAME[tool].validator.validate(arguments)
    return caught.value


def _errors(tool: str, arguments: Any) -> list[dict[str, str]]:
    errors: list[dict[str, str]] = _refusal(tool, arguments).details["errors"]
    return errors


def _at(errors: list[dict[str, str]], path: str) -> list[dict[str, str]]:
    return [e for e in errors if e["path"] == path]


def test_valid_arguments_pass_silently() -> None:
    BY_NAME["ticket.get"].validator.validate({"ticket_id": TICKET_ID})
    BY_NAME["queue.view"].validator.validate({})


def test_a_refusal_is_a_non_retryable_invalid_arguments_error() -> None:
    error = _refusal("ticket.get", {})

    assert error.code == "invalid_arguments"
    assert error.retryable is False
    assert error.retry_after_ms is None


def test_an_unknown_field_is_reported_at_its_own_path_with_the_allowed_fields() -> None:
    errors = _errors("ticket.get", {"ticket_id": TICKET_ID, "ticket": "abc"})

    assert errors == [
        {
            "path": "/ticket",
            "expected": "no such field (allowed: ticket_id)",
            "received": '"abc"',
            "message": "unknown field 'ticket'",
        }
    ]


def test_each_unknown_field_is_reported_once() -> None:
    errors = _errors("tech.arrive", {"ticket_id": TICKET_ID, "note": "x", "eta": 5})

    assert [e["path"] for e in errors] == ["/eta", "/note"]
    assert all("allowed: reason, ticket_id" in e["expected"] for e in errors)


def test_each_missing_required_field_is_listed_once() -> None:
    errors = _errors("ticket.schedule", {"reason": "Customer asked for the afternoon."})

    paths = Counter(e["path"] for e in errors)
    assert paths == {"/ticket_id": 1, "/technician_id": 1, "/window_start": 1, "/window_end": 1}
    for error in errors:
        assert error["expected"] == "a value (required)"
        assert error["received"] == "nothing"


def test_a_wrong_type_gives_path_expected_and_received() -> None:
    errors = _errors("ticket.timeline", {"ticket_id": TICKET_ID, "limit": "ten"})

    assert errors == [
        {
            "path": "/limit",
            "expected": "integer or null",
            "received": '"ten"',
            "message": "'ten' is not of type 'integer', 'null'",
        }
    ]


def test_a_number_out_of_range_names_the_bound() -> None:
    [error] = _errors("ticket.timeline", {"ticket_id": TICKET_ID, "limit": 501})

    assert error["path"] == "/limit"
    assert error["expected"] == "a number <= 500"
    assert error["received"] == "501"


def test_an_enum_violation_lists_the_choices() -> None:
    [error] = _errors("ticket.hold", {"ticket_id": TICKET_ID, "cause": "weather", "reason": "x"})

    assert error["path"] == "/cause"
    assert error["expected"] == "one of customer, provider"
    assert error["received"] == '"weather"'


def test_a_nullable_enum_lists_null_among_the_choices() -> None:
    [error] = _errors("sla.status", {"priority": "P9"})

    assert error["expected"] == "one of P1, P2, P3, P4, null"


def test_an_error_inside_a_list_points_at_the_item() -> None:
    [error] = _errors("queue.view", {"state": ["READY_TO_SCHEDULE", "OPEN"]})

    assert error["path"] == "/state/1"
    assert error["expected"] == f"one of {STATES}"


def test_a_pattern_violation_shows_the_pattern() -> None:
    [error] = _errors("ticket.get", {"ticket_id": "ticket-42"})

    assert error["path"] == "/ticket_id"
    assert error["expected"].startswith("a string matching ^[0-9a-fA-F]{8}-")


def test_several_errors_are_all_reported() -> None:
    error = _refusal("ticket.hold", {"ticket_id": "nope", "cause": "weather", "colour": "red"})

    paths = {e["path"] for e in error.details["errors"]}
    assert paths == {"/ticket_id", "/cause", "/colour", "/reason"}
    for path in paths:
        assert path in error.message


def test_the_message_names_the_tool_and_says_what_to_fix() -> None:
    error = _refusal("ticket.cancel", {"ticket_id": TICKET_ID, "reason": ""})

    assert error.message.startswith("Invalid arguments for ticket.cancel: ")
    assert "/reason: expected at least 1 characters" in error.message


def test_arguments_that_are_not_an_object_are_refused_at_the_root() -> None:
    [error] = _errors("ticket.create", ["customer_name", "Maria Lopez"])

    assert error["path"] == ""
    assert error["expected"] == "object"
    assert "arguments: expected object" in _refusal("ticket.create", []).message


def test_a_long_received_value_is_shortened() -> None:
    [error] = _errors("ticket.cancel", {"ticket_id": TICKET_ID, "reason": "x" * 1001})

    assert error["expected"] == "at most 1000 characters"
    assert len(error["received"]) == 80
    assert error["received"].endswith("…")


def test_a_trailing_newline_does_not_satisfy_an_anchored_pattern() -> None:
    [error] = _errors("queue.view", {"technician_id": "tech-042\n"})

    assert error["path"] == "/technician_id"


# ---- no input makes the validator fail in any other way ---------------------------------

PROPERTY_NAMES = sorted({name for t in TOOLS for name in t.input_schema["properties"]})
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
#: Mostly objects whose keys are real argument names, so values reach the deeper keywords.
ARGUMENTS = JSON_VALUES | st.dictionaries(
    st.sampled_from(PROPERTY_NAMES) | st.text(max_size=8), JSON_VALUES, max_size=8
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tool=st.sampled_from(TOOLS), arguments=ARGUMENTS)
def test_validation_of_any_json_value_raises_nothing_but_a_tool_error(
    tool: Tool, arguments: Any
) -> None:
    error = _outcome(tool, arguments)  # any other exception fails the test

    if error is not None:
        assert error.code == "invalid_arguments"
        assert error.details["errors"], "a refusal lists at least one violation"
        for entry in error.details["errors"]:
            assert set(entry) == {"path", "expected", "received", "message"}
            assert all(isinstance(v, str) for v in entry.values())
        assert error.message.startswith(f"Invalid arguments for {tool.name}: ")


def _outcome(tool: Tool, arguments: Any) -> ToolError | None:
    try:
        tool.validator.validate(arguments)
    except ToolError as error:
        return error
    return None
