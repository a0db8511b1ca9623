"""DispatchClient.call: what goes on the wire, which failures are retried, what comes back."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest
from yarl import URL

from dispatch_client import (
    AttemptTimedOut,
    DispatchError,
    InvalidResponse,
    ProblemResponse,
    RetryPolicy,
    TransportFailure,
)

from .fakes import (
    BASE,
    TICKET,
    TICKETS,
    TOKEN,
    Harness,
    Observed,
    ParkedSleep,
    context,
    roomy_config,
)

BUSY = {"status": 409, "code": "ticket_busy", "title": "Ticket busy"}


def _headers(call: Any) -> dict[str, str]:
    return dict(call.kwargs["headers"])


async def test_every_try_of_a_post_carries_the_same_request_id_and_idempotency_key(
    harness: Harness,
) -> None:
    harness.mock.post(TICKETS, status=503, payload={"code": "unavailable"})
    harness.mock.post(TICKETS, status=201, payload={"id": "T-1"})
    client = harness.client()

    result = await client.create_ticket(context(request_id="req-abc"), {"summary": "no heat"})

    assert result == {"id": "T-1"}
    calls = harness.requests()
    assert len(calls) == 2
    for call in calls:
        headers = _headers(call)
        assert headers["X-Request-ID"] == "req-abc"
        assert headers["Idempotency-Key"] == "req-abc"


async def test_a_patch_sends_the_request_id_as_idempotency_key(harness: Harness) -> None:
    harness.mock.patch(TICKET, status=502)
    harness.mock.patch(TICKET, payload={"id": "T-1", "priority": "P2"})
    client = harness.client()

    await client.update_ticket(context(request_id="req-patch"), "T-1", {"priority": "P2"})

    calls = harness.requests()
    assert len(calls) == 2
    assert [_headers(c)["Idempotency-Key"] for c in calls] == ["req-patch", "req-patch"]
    assert [_headers(c)["X-Request-ID"] for c in calls] == ["req-patch", "req-patch"]


async def test_a_get_sends_the_request_id_but_no_idempotency_key_and_no_body(
    harness: Harness,
) -> None:
    harness.mock.get(TICKET, status=503)
    harness.mock.get(TICKET, payload={"id": "T-1"})
    client = harness.client()

    assert await client.get_ticket(context(request_id="req-get"), "T-1") == {"id": "T-1"}

    calls = harness.requests()
    assert len(calls) == 2
    for call in calls:
        headers = _headers(call)
        assert headers["X-Request-ID"] == "req-get"
        assert "Idempotency-Key" not in headers
        assert "Content-Type" not in headers
        assert call.kwargs["data"] is None


async def test_identity_auth_and_tool_headers_are_sent(harness: Harness) -> None:
    harness.mock.post(TICKETS, status=201, payload={"id": "T-1"})
    client = harness.client()

    await client.create_ticket(context(tool_name="ticket.create"), {"summary": "leak"})

    (call,) = harness.requests()
    headers = _headers(call)
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["X-Correlation-ID"] == "corr-42"
    assert headers["X-Actor-Type"] == "agent"
    assert headers["X-Actor-Id"] == "agent-7"
    assert headers["X-Actor-Role"] == "dispatcher"
    assert headers["X-Tool-Name"] == "ticket.create"
    assert "traceparent" not in headers


async def test_the_json_body_is_sent_as_application_json(harness: Harness) -> None:
    harness.mock.post(f"{TICKET}/hold", payload={"state": "on_hold"})
    client = harness.client()
    body = {"reason": "parts", "until": "2026-12-01", "notes": ["a", "ü"]}

    await client.act(context(), "T-1", "hold", body)

    (call,) = harness.requests()
    assert _headers(call)["Content-Type"] == "application/json"
    assert isinstance(call.kwargs["data"], bytes)
    assert orjson.loads(call.kwargs["data"]) == body


async def test_a_large_body_is_sent_whole_on_every_try_each_from_a_fresh_stream(
    harness: Harness,
) -> None:
    """Over 1 MiB a body goes out as a BytesIO (aiohttp writes it a chunk at a time): each
    try must get its own, since aiohttp closes the one it sent."""
    harness.mock.post(f"{TICKET}/evidence", status=503, payload={"code": "unavailable"})
    harness.mock.post(f"{TICKET}/evidence", status=201, payload={"id": "E-1"})
    client = harness.client()
    body = {"kind": "photo", "content_base64": "QUJD" * (300 * 1024)}

    await client.act(context(), "T-1", "evidence", body)

    sent = [call.kwargs["data"] for call in harness.requests()]
    assert len(sent) == 2
    assert sent[0] is not sent[1]
    assert all(orjson.loads(data.getvalue()) == body for data in sent)


async def test_a_ticket_id_is_percent_encoded_as_one_path_segment(harness: Harness) -> None:
    harness.mock.get(f"{BASE}/v1/tickets/a%2Fb%3Fc", payload={"id": "a/b?c"})
    client = harness.client()

    assert await client.get_ticket(context(), "a/b?c") == {"id": "a/b?c"}
    assert [url for (_, url) in harness.mock.requests] == [
        URL(f"{BASE}/v1/tickets/a%2Fb%3Fc", encoded=True)
    ]


@pytest.mark.parametrize("max_attempts", [1, 3, 5])
async def test_a_call_failing_with_503_on_every_try_makes_exactly_max_attempts_tries(
    harness: Harness, max_attempts: int
) -> None:
    harness.mock.post(TICKETS, status=503, payload={"code": "unavailable"}, repeat=True)
    client = harness.client(roomy_config(RetryPolicy(max_attempts=max_attempts)))

    with pytest.raises(ProblemResponse) as caught:
        await client.create_ticket(context(), {"summary": "x"})

    assert caught.value.status == 503
    assert caught.value.code == "unavailable"
    assert harness.request_count() == max_attempts
    assert len(harness.sleep.delays) == max_attempts - 1


RETRIED: list[Any] = [
    pytest.param({"status": 502}, id="502"),
    pytest.param({"status": 503}, id="503"),
    pytest.param({"status": 504}, id="504"),
    pytest.param({"status": 429}, id="429"),
    pytest.param(
        {"status": 409, "payload": {"code": "request_in_progress"}}, id="409-request_in_progress"
    ),
    pytest.param({"status": 409, "payload": BUSY}, id="409-ticket_busy"),
    pytest.param({"exception": aiohttp.ClientConnectionError("reset")}, id="connection-error"),
    pytest.param({"exception": aiohttp.ClientOSError(104, "reset")}, id="os-error"),
    pytest.param({"exception": TimeoutError()}, id="per-try-timeout"),
]


@pytest.mark.parametrize("failure", RETRIED)
async def test_a_transient_failure_is_retried(harness: Harness, failure: dict[str, Any]) -> None:
    harness.mock.post(TICKETS, **failure)
    harness.mock.post(TICKETS, status=201, payload={"id": "T-9"})
    client = harness.client()

    assert await client.create_ticket(context(), {"summary": "x"}) == {"id": "T-9"}
    assert harness.request_count() == 2


NOT_RETRIED: list[Any] = [
    pytest.param(400, {"code": "invalid_request"}, "invalid_request", id="400"),
    pytest.param(404, {"code": "ticket_not_found"}, "ticket_not_found", id="404"),
    pytest.param(409, {"code": "invalid_transition"}, "invalid_transition", id="409-conflict"),
    pytest.param(409, {"title": "no code"}, "http_409", id="409-without-code"),
    pytest.param(422, {"code": "validation_failed"}, "validation_failed", id="422"),
    pytest.param(500, {"code": "internal"}, "internal", id="500"),
]


@pytest.mark.parametrize(("status", "problem", "code"), NOT_RETRIED)
async def test_a_non_transient_answer_is_not_retried(
    harness: Harness, status: int, problem: dict[str, Any], code: str
) -> None:
    harness.mock.post(TICKETS, status=status, payload=problem, repeat=True)
    client = harness.client()

    with pytest.raises(ProblemResponse) as caught:
        await client.create_ticket(context(), {"summary": "x"})

    assert harness.request_count() == 1
    assert harness.sleep.delays == []
    assert caught.value.status == status
    assert caught.value.code == code
    assert caught.value.retryable is False


async def test_a_non_json_error_body_still_maps_to_a_problem_response(harness: Harness) -> None:
    harness.mock.post(
        TICKETS, status=500, body="<html>Internal Server Error</html>", content_type="text/html"
    )
    client = harness.client()

    with pytest.raises(ProblemResponse) as caught:
        await client.create_ticket(context(), {"summary": "x"})

    assert caught.value.status == 500
    assert caught.value.code == "http_500"
    assert caught.value.problem["status"] == 500
    assert caught.value.problem["detail"] == "<html>Internal Server Error</html>"
    assert harness.request_count() == 1


async def test_a_non_json_502_body_is_retried_under_an_http_502_code(harness: Harness) -> None:
    harness.mock.get(TICKET, status=502, body="Bad Gateway", content_type="text/plain", repeat=True)
    client = harness.client(roomy_config(RetryPolicy(max_attempts=2)))

    with pytest.raises(ProblemResponse) as caught:
        await client.get_ticket(context(), "T-1")

    assert caught.value.code == "http_502"
    assert harness.request_count() == 2


async def test_success_after_transient_failures_returns_the_decoded_body(
    harness: Harness,
) -> None:
    harness.mock.get(TICKET, status=503)
    harness.mock.get(TICKET, exception=aiohttp.ClientConnectionError())
    harness.mock.get(TICKET, payload={"id": "T-1", "state": "scheduled", "tags": [1, 2]})
    client = harness.client()

    result = await client.get_ticket(context(), "T-1")

    assert result == {"id": "T-1", "state": "scheduled", "tags": [1, 2]}
    assert harness.request_count() == 3


async def test_an_empty_2xx_body_decodes_to_none(harness: Harness) -> None:
    harness.mock.post(f"{TICKET}/resume", status=204, body=b"")
    client = harness.client()

    assert await client.act(context(), "T-1", "resume", {}) is None


async def test_connection_errors_on_every_try_raise_transport_failure(harness: Harness) -> None:
    harness.mock.get(TICKET, exception=aiohttp.ClientConnectionError("refused"), repeat=True)
    client = harness.client(roomy_config(RetryPolicy(max_attempts=3)))

    with pytest.raises(TransportFailure) as caught:
        await client.get_ticket(context(), "T-1")

    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectionError)
    assert harness.request_count() == 3


async def test_timeouts_on_every_try_raise_attempt_timed_out(harness: Harness) -> None:
    harness.mock.get(TICKET, exception=TimeoutError(), repeat=True)
    client = harness.client(roomy_config(RetryPolicy(max_attempts=3)))

    with pytest.raises(AttemptTimedOut):
        await client.get_ticket(context(), "T-1")

    assert harness.request_count() == 3


async def test_the_observer_gets_one_call_per_try_with_attempt_numbers_and_outcomes(
    harness: Harness,
) -> None:
    def slow(seconds: float) -> Any:
        def callback(url: URL, **kwargs: Any) -> None:
            harness.clock.advance(seconds)

        return callback

    harness.mock.post(TICKETS, status=503, callback=slow(0.25))
    harness.mock.post(TICKETS, exception=aiohttp.ClientConnectionError(), callback=slow(0.5))
    harness.mock.post(TICKETS, exception=TimeoutError(), callback=slow(1.0))
    harness.mock.post(TICKETS, status=201, payload={"id": "T-1"}, callback=slow(0.125))
    observed = Observed()
    client = harness.client(
        roomy_config(RetryPolicy(max_attempts=4, per_try_timeout_s=2.0)), observer=observed
    )

    await client.create_ticket(context(request_id="req-obs"), {"summary": "x"})

    assert [(rid, n, outcome) for (rid, n, outcome, _) in observed.calls] == [
        ("req-obs", 1, "ProblemResponse"),
        ("req-obs", 2, "TransportFailure"),
        ("req-obs", 3, "AttemptTimedOut"),
        ("req-obs", 4, "ok"),
    ]
    assert [seconds for (*_, seconds) in observed.calls] == pytest.approx([0.25, 0.5, 1.0, 0.125])


async def test_the_observer_sees_a_non_retried_failure_once(harness: Harness) -> None:
    harness.mock.post(TICKETS, status=422, payload={"code": "validation_failed"})
    observed = Observed()
    client = harness.client(observer=observed)

    with pytest.raises(ProblemResponse):
        await client.create_ticket(context(), {})

    assert [(n, outcome) for (_, n, outcome, _) in observed.calls] == [(1, "ProblemResponse")]


async def test_concurrent_calls_number_their_tries_independently(harness: Harness) -> None:
    harness.mock.get(TICKET, status=503, repeat=True)
    observed = Observed()
    client = harness.client(roomy_config(RetryPolicy(max_attempts=3)), observer=observed)

    results = await asyncio.gather(
        *(client.get_ticket(context(request_id=f"req-{i}"), "T-1") for i in range(4)),
        return_exceptions=True,
    )

    assert all(isinstance(r, ProblemResponse) for r in results)
    for i in range(4):
        attempts = [n for (rid, n, _, _) in observed.calls if rid == f"req-{i}"]
        assert attempts == [1, 2, 3]


async def test_a_cancelled_call_parked_in_backoff_makes_no_further_try(harness: Harness) -> None:
    harness.mock.post(TICKETS, status=503, repeat=True)
    parked = ParkedSleep()
    client = harness.client(roomy_config(RetryPolicy(max_attempts=5)), sleep=parked)

    task = asyncio.create_task(client.create_ticket(context(), {"summary": "x"}))
    await asyncio.wait_for(parked.entered.wait(), 1)
    tries_before_cancel = harness.request_count()
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(5):
        await asyncio.sleep(0)

    assert tries_before_cancel == 1
    assert harness.request_count() == tries_before_cancel
    assert len(parked.delays) == 1
    assert task.cancelled()


async def test_a_cancelled_error_raised_by_the_transport_is_not_retried(
    harness: Harness,
) -> None:
    def cancel(url: URL, **kwargs: Any) -> None:
        raise asyncio.CancelledError

    harness.mock.post(TICKETS, callback=cancel, repeat=True)
    observed = Observed()
    client = harness.client(roomy_config(RetryPolicy(max_attempts=5)), observer=observed)

    with pytest.raises(asyncio.CancelledError):
        await client.create_ticket(context(), {"summary": "x"})

    assert harness.request_count() == 1
    assert harness.sleep.delays == []
    assert [(n, outcome) for (_, n, outcome, _) in observed.calls] == [(1, "cancelled")]


async def test_every_failure_is_a_dispatch_error(harness: Harness) -> None:
    harness.mock.get(TICKET, exception=aiohttp.ServerDisconnectedError(), repeat=True)
    client = harness.client(roomy_config(RetryPolicy(max_attempts=2)))

    with pytest.raises(DispatchError):
        await client.get_ticket(context(), "T-1")


async def test_ready_is_true_only_for_a_200_from_readyz(harness: Harness) -> None:
    client = harness.client()
    harness.mock.get(f"{BASE}/readyz", status=200, body="ok")
    harness.mock.get(f"{BASE}/readyz", status=503)
    harness.mock.get(f"{BASE}/readyz", exception=aiohttp.ClientConnectionError())

    assert await client.ready() is True
    assert await client.ready() is False
    assert await client.ready() is False
    assert harness.request_count() == 3


async def test_a_2xx_answer_that_is_not_json_is_an_invalid_response_and_not_retried(
    harness: Harness,
) -> None:
    client = harness.client(roomy_config(RetryPolicy(max_attempts=3)))
    harness.mock.get(TICKET, status=200, body="<html>proxy page</html>", repeat=3)

    with pytest.raises(InvalidResponse):
        await client.get_ticket(context(), "T-1")

    assert harness.request_count() == 1


async def test_a_dry_run_asks_with_dry_run_true_and_no_idempotency_key(
    harness: Harness,
) -> None:
    harness.mock.post(f"{TICKET}/cancel?dry_run=true", status=503)
    harness.mock.post(f"{TICKET}/cancel?dry_run=true", status=200, payload={"dry_run": True})
    client = harness.client()
    ctx = context(request_id="req-dry", dry_run=True)

    result = await client.act(ctx, "T-1", "cancel", {"reason": "duplicate"})

    assert result == {"dry_run": True}
    calls = harness.requests()
    assert len(calls) == 2
    for call in calls:
        assert "Idempotency-Key" not in _headers(call)
        assert call.kwargs["params"] == {"dry_run": "true"}


async def test_a_failed_dry_run_never_may_have_applied(harness: Harness) -> None:
    harness.mock.post(f"{TICKET}/arrive?dry_run=true", status=502, repeat=True)
    client = harness.client(roomy_config(RetryPolicy(max_attempts=2)))

    with pytest.raises(ProblemResponse) as failed:
        await client.act(context(dry_run=True), "T-1", "arrive", {})

    assert failed.value.maybe_applied is False
