"""from_dispatch_error: every way a dispatch-api call can fail becomes one of the bounded tool
error codes, with a message for the model, retryability and details."""

from __future__ import annotations

from typing import Any

import pytest

from dispatch_client import (
    AttemptTimedOut,
    CircuitOpen,
    DeadlineExceeded,
    DispatchError,
    InvalidResponse,
    ProblemResponse,
    TransportFailure,
)
from tools import CODES, HTTP_STATUS, ToolError, from_dispatch_error

TICKET_ID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
#: DESIGN section 5, in its order, then the approval codes of section 8.
DESIGN_CODES = [
    "invalid_arguments",
    "unknown_tool",
    "unauthenticated",
    "forbidden",
    "not_found",
    "invalid_transition",
    "evidence_missing",
    "idempotency_conflict",
    "in_progress",
    "rate_limited",
    "upstream_timeout",
    "upstream_unavailable",
    "upstream_error",
    "deadline_exceeded",
    "internal",
    "approval_pending",
    "approval_denied",
]


def _problem(status: int, code: str, detail: str, **extensions: Any) -> dict[str, Any]:
    """A problem+json body as dispatch-api writes it."""
    return {
        "type": f"https://dispatch-bridge.dev/problems/{code}",
        "title": "Action rejected",
        "status": status,
        "detail": detail,
        "code": code,
        **extensions,
    }


def _translate(
    status: int, code: str, detail: str = "refused", retry_after_s: float | None = None, **ext: Any
) -> ToolError:
    exc = ProblemResponse(status, _problem(status, code, detail, **ext), retry_after_s)
    return from_dispatch_error(exc, "tech.complete")


MISSING = [
    {"kind": "photo", "tag": "after", "description": "Photo after the repair"},
    {"kind": "signature", "tag": "customer", "description": "Customer signature"},
    {"kind": "note", "tag": None, "description": "Work summary"},
]


def test_missing_evidence_lists_each_kind_and_tag_and_keeps_the_details() -> None:
    error = _translate(
        422,
        "evidence_missing",
        "completion needs evidence still missing: photo:after, signature:customer, note",
        missing_evidence=MISSING,
        incident_type="water_leak",
        allowed_actions=["attach_evidence", "complete"],
        ticket_id=TICKET_ID,
        event_seq=9,
    )

    assert error.code == "evidence_missing"
    assert error.retryable is False
    assert "(photo:after, signature:customer, note)" in error.message
    assert "evidence.attach" in error.message
    assert "tech.complete" in error.message
    assert error.details["missing_evidence"] == MISSING
    assert error.details["incident_type"] == "water_leak"
    assert error.details["upstream_code"] == "evidence_missing"


def test_problem_members_stay_out_of_the_details() -> None:
    error = _translate(422, "evidence_missing", missing_evidence=MISSING)

    assert set(error.details) == {"missing_evidence", "upstream_code"}


def test_an_invalid_transition_lists_the_actions_the_ticket_allows() -> None:
    error = _translate(
        409,
        "invalid_transition",
        "cannot complete a ticket in state SCHEDULED",
        allowed_actions=["attach_evidence", "cancel", "dispatch", "hold"],
    )

    assert error.code == "invalid_transition"
    assert error.retryable is False
    assert error.message == (
        "cannot complete a ticket in state SCHEDULED. Actions the ticket allows now:"
        " attach_evidence, cancel, dispatch, hold."
    )
    assert error.details["allowed_actions"] == ["attach_evidence", "cancel", "dispatch", "hold"]


def test_a_terminal_ticket_allows_no_actions() -> None:
    error = _translate(409, "invalid_transition", "ticket is CANCELLED", allowed_actions=[])

    assert error.message.endswith("Actions the ticket allows now: none.")


@pytest.mark.parametrize("code", ["request_in_progress", "ticket_busy"])
def test_a_request_still_in_progress_is_retryable_after_the_server_delay(code: str) -> None:
    error = _translate(409, code, retry_after_s=1.5)

    assert error.code == "in_progress"
    assert error.retryable is True
    assert error.retry_after_ms == 1500


def test_in_progress_without_retry_after_suggests_a_second() -> None:
    error = _translate(409, "request_in_progress")

    assert error.retry_after_ms == 1000


def test_a_reused_tool_call_id_is_an_idempotency_conflict() -> None:
    error = _translate(422, "idempotency_conflict", "key used with another request")

    assert error.code == "idempotency_conflict"
    assert error.retryable is False
    assert "tool_call_id" in error.message


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (422, "validation_failed"),
        (400, "bad_request"),
        (413, "payload_too_large"),
        (415, "unsupported_media_type"),
    ],
)
def test_arguments_dispatch_api_refuses_are_invalid_arguments(status: int, code: str) -> None:
    error = _translate(
        status,
        code,
        "window_end must be after window_start",
        invalid_fields=[{"path": "/window_end"}],
    )

    assert error.code == "invalid_arguments"
    assert error.retryable is False
    assert "window_end must be after window_start" in error.message
    assert "tech.complete" in error.message
    assert error.details["invalid_fields"] == [{"path": "/window_end"}]


def test_an_unknown_ticket_is_not_found() -> None:
    error = _translate(404, "ticket_not_found", "no ticket " + TICKET_ID)

    assert error.code == "not_found"
    assert error.retryable is False
    assert TICKET_ID in error.message
    assert "queue.view" in error.message


def test_a_refused_role_is_forbidden() -> None:
    error = _translate(403, "forbidden", "technicians may only act on their own tickets")

    assert error.code == "forbidden"
    assert error.retryable is False
    assert "technicians may only act on their own tickets" in error.message


def test_rate_limiting_is_retryable_after_the_server_delay() -> None:
    error = _translate(429, "rate_limited", retry_after_s=0.25)

    assert error.code == "rate_limited"
    assert error.retryable is True
    assert error.retry_after_ms == 250


@pytest.mark.parametrize("status", [502, 503])
def test_an_unavailable_upstream_is_retryable(status: int) -> None:
    error = _translate(status, "database_unavailable", retry_after_s=3)

    assert error.code == "upstream_unavailable"
    assert error.retryable is True
    assert error.retry_after_ms == 3000


def test_an_upstream_gateway_timeout_is_retryable() -> None:
    error = _translate(504, "http_504")

    assert error.code == "upstream_timeout"
    assert error.retryable is True
    assert error.retry_after_ms == 1000


@pytest.mark.parametrize("status", [500, 501, 405])
def test_any_other_failure_is_an_upstream_error_that_is_not_retried(status: int) -> None:
    error = _translate(status, "internal_error")

    assert error.code == "upstream_error"
    assert error.retryable is False
    assert error.retry_after_ms is None
    assert f"({status} internal_error)" in error.message


def test_an_answer_that_was_not_problem_json_still_maps_by_status() -> None:
    """dispatch_client stands in status, `http_<status>` and the raw text for a body that
    is not JSON (a proxy's HTML page, say)."""
    stand_in = {"status": 500, "code": "http_500", "detail": "<html>Internal Server Error"}
    exc = ProblemResponse(500, stand_in)

    error = from_dispatch_error(exc, "ticket.get")

    assert error.code == "upstream_error"
    assert "http_500" in error.message
    assert error.details == {"upstream_code": "http_500"}


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (409, "request_in_progress"),
        (409, "invalid_transition"),
        (422, "evidence_missing"),
        (429, "rate_limited"),
        (500, "internal_error"),
        (502, "bad_gateway"),
        (503, "unavailable"),
        (504, "gateway_timeout"),
    ],
)
def test_a_problem_is_retryable_for_the_model_exactly_when_the_client_would_retry_it(
    status: int, code: str
) -> None:
    exc = ProblemResponse(status, _problem(status, code, "x"))

    assert from_dispatch_error(exc, "ticket.hold").retryable is exc.retryable


def test_a_transport_failure_is_an_unavailable_upstream() -> None:
    error = from_dispatch_error(TransportFailure("connection refused"), "ticket.get")

    assert error.code == "upstream_unavailable"
    assert error.retryable is True
    assert error.retry_after_ms == 1000


def _after_sending(exc: DispatchError) -> DispatchError:
    """`exc` as DispatchClient raises it when some try of the call may have been applied."""
    exc.maybe_applied = True
    return exc


def test_a_slow_attempt_is_an_upstream_timeout_retried_with_the_same_call_id() -> None:
    error = from_dispatch_error(_after_sending(AttemptTimedOut("per-try")), "tech.complete")

    assert error.code == "upstream_timeout"
    assert error.retryable is True
    assert "same tool_call_id" in error.message


def test_a_spent_deadline_says_the_change_may_have_happened() -> None:
    error = from_dispatch_error(_after_sending(DeadlineExceeded("deadline")), "tech.complete")

    assert error.code == "deadline_exceeded"
    assert error.retryable is True
    assert error.outcome == "unknown"
    assert "may have been applied" in error.message
    assert "same tool_call_id" in error.message


def test_an_open_circuit_retries_after_its_remaining_open_time() -> None:
    error = from_dispatch_error(CircuitOpen(2.5), "ticket.get")

    assert error.code == "upstream_unavailable"
    assert error.retryable is True
    assert error.retry_after_ms == 2500
    assert error.outcome == "none"
    assert "Nothing was changed" in error.message


def test_an_open_circuit_after_a_try_that_may_have_applied_says_the_outcome_is_unknown() -> None:
    """The reported bug: try 1 timed out after sending, the retry met the open breaker."""
    error = from_dispatch_error(_after_sending(CircuitOpen(2.5)), "ticket.schedule")

    assert error.code == "upstream_unavailable"
    assert error.outcome == "unknown"
    assert error.to_json()["details"]["outcome"] == "unknown"
    assert "nothing was changed" not in error.message.lower()
    assert "same tool_call_id" in error.message
    assert "new tool_call_id risks doing it twice" in error.message


def test_every_translated_error_carries_its_outcome_in_details() -> None:
    nothing: tuple[DispatchError, ...] = (
        TransportFailure("refused", sent=False),
        ProblemResponse(422, _problem(422, "validation_failed", "bad")),
        ProblemResponse(404, _problem(404, "ticket_not_found", "no ticket")),
        CircuitOpen(1.0),
    )
    for exc in nothing:
        assert from_dispatch_error(exc, "ticket.hold").to_json()["details"]["outcome"] == "none"
    maybe: tuple[DispatchError, ...] = (
        TransportFailure("reset after sending"),
        ProblemResponse(503, _problem(503, "database_unavailable", "gone")),
        InvalidResponse("a 200 answer whose body is not JSON"),
    )
    for exc in maybe:
        error = from_dispatch_error(_after_sending(exc), "ticket.hold")
        assert error.to_json()["details"]["outcome"] == "unknown"


def test_a_replayed_evidence_refusal_says_it_is_a_stored_outcome_and_asks_for_a_new_call_id() -> (
    None
):
    """After the evidence was attached, the old tool_call_id only replays the old refusal:
    the message must not send the agent round again under it."""
    problem = _problem(422, "evidence_missing", "missing", missing_evidence=MISSING)
    error = from_dispatch_error(ProblemResponse(422, problem, replayed=True), "tech.complete")

    assert error.code == "evidence_missing"
    assert error.outcome == "none"
    assert "stored outcome of an earlier call with this tool_call_id" in error.message
    assert "NEW tool_call_id" in error.message
    assert "call tech.complete again" not in error.message


def test_a_circuit_about_to_close_still_asks_for_a_positive_wait() -> None:
    assert from_dispatch_error(CircuitOpen(0.0), "ticket.get").retry_after_ms == 1


def test_a_success_answer_that_is_not_json_is_an_upstream_error() -> None:
    error = from_dispatch_error(
        InvalidResponse("a 200 answer whose body is not JSON"), "ticket.get"
    )

    assert error.code == "upstream_error"
    assert error.retryable is False
    assert "not JSON" in error.message


def test_an_unexpected_dispatch_error_is_internal_and_names_the_tool() -> None:
    error = from_dispatch_error(DispatchError("?"), "queue.view")

    assert error.code == "internal"
    assert error.retryable is False
    assert "queue.view" in error.message


def _every_translation() -> list[ToolError]:
    problems = [
        _translate(status, code, allowed_actions=[], missing_evidence=[])
        for status, code in [
            (400, "bad_request"),
            (403, "forbidden"),
            (404, "not_found"),
            (409, "invalid_transition"),
            (409, "request_in_progress"),
            (422, "evidence_missing"),
            (422, "idempotency_conflict"),
            (422, "validation_failed"),
            (429, "rate_limited"),
            (500, "internal_error"),
            (503, "unavailable"),
            (504, "gateway_timeout"),
        ]
    ]
    others = [
        from_dispatch_error(exc, "ticket.get")
        for exc in (
            TransportFailure(),
            AttemptTimedOut(),
            DeadlineExceeded(),
            CircuitOpen(1.0),
            InvalidResponse("a 200 answer whose body is not JSON"),
            DispatchError(),
        )
    ]
    return problems + others


def test_every_translation_uses_a_design_code_and_serialises_completely() -> None:
    errors = _every_translation()

    assert {e.code for e in errors} <= CODES
    for error in errors:
        body = error.to_json()
        assert set(body) == {"code", "message", "retryable", "retry_after_ms", "details"}
        assert body["message"]
        assert (body["retry_after_ms"] is not None) == body["retryable"]


def test_the_codes_are_exactly_those_of_the_design() -> None:
    assert list(HTTP_STATUS) == DESIGN_CODES
    assert frozenset(DESIGN_CODES) == CODES


def test_a_tool_error_with_an_unknown_code_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown tool error code 'teapot'"):
        ToolError("teapot", "I am a teapot")


def test_the_evidence_limit_is_a_final_refusal_naming_the_limit() -> None:
    error = _translate(
        409,
        "evidence_limit_reached",
        "the ticket already holds 200 evidence items, the most one ticket may hold (200)",
        limit=200,
        count=200,
        allowed_actions=["attach_evidence", "complete"],
    )

    assert error.code == "invalid_transition"
    assert error.retryable is False
    assert "200 evidence items" in error.message
    assert "Do not retry" in error.message
    assert error.details["upstream_code"] == "evidence_limit_reached"
    assert (error.details["limit"], error.details["count"]) == (200, 200)


def test_a_double_booking_names_the_clash_the_free_window_and_who_else_could_go() -> None:
    error = _translate(
        409,
        "schedule_conflict",
        "technician 'tech-1' is already booked on ticket t-a in that window",
        conflict={"ticket_id": "t-a", "window_start": "A", "window_end": "B"},
        candidates=["tech-2", "tech-3"],
        earliest_free_window={"window_start": "2030-01-07T15:00:00+00:00", "window_end": "E"},
    )

    assert (error.code, error.retryable) == ("invalid_transition", False)
    assert "already booked on ticket t-a" in error.message
    assert "free from 2030-01-07T15:00:00+00:00 to E" in error.message
    assert "tech-2, tech-3" in error.message
    assert error.details["conflict"]["ticket_id"] == "t-a"
    assert error.to_json()["details"]["outcome"] == "none"


@pytest.mark.parametrize(
    ("status", "code", "tool_code"),
    [
        (404, "technician_not_found", "not_found"),
        (422, "technician_inactive", "invalid_arguments"),
        (422, "technician_lacks_skill", "invalid_arguments"),
        (422, "invalid_window", "invalid_arguments"),
    ],
)
def test_scheduling_refusals_map_to_closed_codes_that_say_what_to_try(
    status: int, code: str, tool_code: str
) -> None:
    error = _translate(status, code, "refused", candidates=[], not_before="2030-01-07T12:55Z")

    assert (error.code, error.retryable) == (tool_code, False)
    assert "ticket.schedule again" in error.message
    if code == "invalid_window":
        assert "2030-01-07T12:55Z" in error.message
    else:
        assert "technician.list" in error.message
    assert error.details["upstream_code"] == code
