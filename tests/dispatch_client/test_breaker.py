"""The circuit breaker, through the client and on its own."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aioresponses import CallbackResult
from yarl import URL

from dispatch_client import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    CircuitOpen,
    DispatchClient,
    DispatchError,
    ProblemResponse,
    RetryPolicy,
)

from .fakes import TICKET, FakeClock, Harness, Observed, context, roomy_config

OPEN_S = 5.0
CALLER = "agent-7"  # the actor_id of fakes.context()


def _state(breaker: CircuitBreaker) -> BreakerState:
    """Read afresh each time (a call keeps mypy from narrowing the property)."""
    return breaker.state


def _client(harness: Harness, threshold: int = 3, max_attempts: int = 1) -> DispatchClient:
    config = roomy_config(
        RetryPolicy(max_attempts=max_attempts),
        breaker=BreakerConfig(failure_threshold=threshold, open_s=OPEN_S),
    )
    return harness.client(config)


async def _open_the_circuit(harness: Harness, client: DispatchClient, threshold: int) -> None:
    harness.mock.get(TICKET, status=503, repeat=threshold)
    for _ in range(threshold):
        with pytest.raises(ProblemResponse):
            await client.get_ticket(context(), "T-1")
    assert _state(client.breaker) is BreakerState.OPEN


async def test_after_threshold_transient_failures_the_next_call_fails_fast_without_a_request(
    harness: Harness,
) -> None:
    observed = Observed()
    client = harness.client(
        roomy_config(
            RetryPolicy(max_attempts=1),
            breaker=BreakerConfig(failure_threshold=3, open_s=OPEN_S),
        ),
        observer=observed,
    )
    await _open_the_circuit(harness, client, 3)
    harness.mock.get(TICKET, payload={"id": "T-1"}, repeat=True)
    tries = harness.request_count()

    with pytest.raises(CircuitOpen) as caught:
        await client.get_ticket(context(), "T-1")

    assert harness.request_count() == tries == 3
    assert caught.value.retry_after_s == pytest.approx(OPEN_S)
    assert caught.value.retryable is False
    assert len(observed.calls) == 3  # no try, so no observation


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param({"status": 502}, id="502"),
        pytest.param({"status": 503}, id="503"),
        pytest.param({"status": 504}, id="504"),
        pytest.param({"status": 500}, id="500"),
        pytest.param({"status": 200, "body": "<html>proxy error</html>"}, id="2xx-not-json"),
        pytest.param({"exception": aiohttp.ClientConnectionError()}, id="connection-error"),
        pytest.param({"exception": TimeoutError()}, id="per-try-timeout"),
    ],
)
async def test_every_kind_of_transient_failure_counts_towards_opening(
    harness: Harness, failure: dict[str, Any]
) -> None:
    client = _client(harness, threshold=2)
    harness.mock.get(TICKET, repeat=2, **failure)
    for _ in range(2):
        with pytest.raises(DispatchError):
            await client.get_ticket(context(), "T-1")

    assert _state(client.breaker) is BreakerState.OPEN
    with pytest.raises(CircuitOpen):
        await client.get_ticket(context(), "T-1")
    assert harness.request_count() == 2


async def test_the_breaker_stays_closed_below_the_threshold(harness: Harness) -> None:
    client = _client(harness, threshold=3)
    harness.mock.get(TICKET, status=503, repeat=2)
    for _ in range(2):
        with pytest.raises(ProblemResponse):
            await client.get_ticket(context(), "T-1")

    assert _state(client.breaker) is BreakerState.CLOSED


async def test_failures_count_across_the_tries_of_one_call_and_stop_its_retries(
    harness: Harness,
) -> None:
    client = _client(harness, threshold=2, max_attempts=5)
    harness.mock.get(TICKET, status=503, repeat=True)

    with pytest.raises(CircuitOpen):
        await client.get_ticket(context(), "T-1")

    assert harness.request_count() == 2
    assert _state(client.breaker) is BreakerState.OPEN


async def test_after_open_s_one_probe_goes_out_and_its_success_closes_the_circuit(
    harness: Harness,
) -> None:
    client = _client(harness)
    await _open_the_circuit(harness, client, 3)

    harness.clock.advance(OPEN_S - 0.01)
    assert _state(client.breaker) is BreakerState.OPEN
    with pytest.raises(CircuitOpen):
        await client.get_ticket(context(), "T-1")

    harness.clock.advance(0.01)
    assert _state(client.breaker) is BreakerState.HALF_OPEN
    harness.mock.get(TICKET, payload={"id": "T-1"}, repeat=True)
    assert await client.get_ticket(context(), "T-1") == {"id": "T-1"}
    assert harness.request_count() == 4
    assert _state(client.breaker) is BreakerState.CLOSED

    await client.get_ticket(context(), "T-1")
    assert harness.request_count() == 5


async def test_a_failed_probe_reopens_the_circuit_for_another_open_s(harness: Harness) -> None:
    client = _client(harness)
    await _open_the_circuit(harness, client, 3)
    harness.clock.advance(OPEN_S)
    harness.mock.get(TICKET, status=504)

    with pytest.raises(ProblemResponse):
        await client.get_ticket(context(), "T-1")

    assert harness.request_count() == 4
    assert _state(client.breaker) is BreakerState.OPEN
    with pytest.raises(CircuitOpen) as caught:
        await client.get_ticket(context(), "T-1")
    assert caught.value.retry_after_s == pytest.approx(OPEN_S)
    assert harness.request_count() == 4


async def test_a_4xx_probe_answer_closes_the_circuit(harness: Harness) -> None:
    client = _client(harness)
    await _open_the_circuit(harness, client, 3)
    harness.clock.advance(OPEN_S)
    harness.mock.get(TICKET, status=404, payload={"code": "ticket_not_found"})

    with pytest.raises(ProblemResponse):
        await client.get_ticket(context(), "T-1")

    assert _state(client.breaker) is BreakerState.CLOSED


async def test_only_one_probe_goes_out_while_half_open(harness: Harness) -> None:
    client = _client(harness)
    await _open_the_circuit(harness, client, 3)
    harness.clock.advance(OPEN_S)
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow_ok(url: URL, **kwargs: Any) -> CallbackResult:
        entered.set()
        await release.wait()
        return CallbackResult(status=200, payload={"id": "T-1"})

    harness.mock.get(TICKET, callback=slow_ok)
    probe = asyncio.create_task(client.get_ticket(context(request_id="probe"), "T-1"))
    await asyncio.wait_for(entered.wait(), 1)

    with pytest.raises(CircuitOpen):
        await client.get_ticket(context(request_id="second"), "T-1")
    assert harness.request_count() == 4

    release.set()
    assert await asyncio.wait_for(probe, 1) == {"id": "T-1"}
    assert _state(client.breaker) is BreakerState.CLOSED


async def test_a_cancelled_probe_lets_another_probe_through(harness: Harness) -> None:
    client = _client(harness)
    await _open_the_circuit(harness, client, 3)
    harness.clock.advance(OPEN_S)
    entered, never = asyncio.Event(), asyncio.Event()

    async def first_hangs(url: URL, **kwargs: Any) -> CallbackResult:
        # aioresponses keeps a match whose callback was cancelled, so it serves the next
        # request too: only the first one hangs.
        if not entered.is_set():
            entered.set()
            await never.wait()
        return CallbackResult(status=200, payload={"id": "T-1"})

    harness.mock.get(TICKET, callback=first_hangs)
    probe = asyncio.create_task(client.get_ticket(context(request_id="probe"), "T-1"))
    await asyncio.wait_for(entered.wait(), 1)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe

    assert _state(client.breaker) is BreakerState.HALF_OPEN
    assert await client.get_ticket(context(request_id="next"), "T-1") == {"id": "T-1"}
    assert harness.request_count() == 5
    assert _state(client.breaker) is BreakerState.CLOSED


async def test_a_cancelled_call_that_was_not_the_probe_lets_no_second_probe_through(
    harness: Harness,
) -> None:
    client = _client(harness, threshold=1)
    old_entered, never = asyncio.Event(), asyncio.Event()
    probe_entered, release = asyncio.Event(), asyncio.Event()

    async def old_call_hangs(url: URL, **kwargs: Any) -> CallbackResult:
        old_entered.set()
        await never.wait()
        raise AssertionError("unreachable")

    async def probe_waits(url: URL, **kwargs: Any) -> CallbackResult:
        if not probe_entered.is_set():  # a second request (there should be none) answers now
            probe_entered.set()
            await release.wait()
        return CallbackResult(status=200, payload={"id": "T-1"})

    # A call goes out while the circuit is still closed and hangs ...
    harness.mock.get(f"{TICKET}/timeline", callback=old_call_hangs)
    old = asyncio.create_task(client.timeline(context(request_id="old"), "T-1", {}))
    await asyncio.wait_for(old_entered.wait(), 1)
    # ... the circuit opens, open_s passes and a probe goes out ...
    harness.mock.get(TICKET, status=503)
    with pytest.raises(ProblemResponse):
        await client.get_ticket(context(request_id="opener"), "T-1")
    harness.clock.advance(OPEN_S)
    harness.mock.get(TICKET, callback=probe_waits)
    probe = asyncio.create_task(client.get_ticket(context(request_id="probe"), "T-1"))
    await asyncio.wait_for(probe_entered.wait(), 1)
    # ... then the old call is cancelled: the probe is still out, so nobody else may go.
    old.cancel()
    with pytest.raises(asyncio.CancelledError):
        await old
    requests = harness.request_count()

    with pytest.raises(CircuitOpen):
        await client.get_ticket(context(request_id="third"), "T-1")
    assert harness.request_count() == requests

    release.set()
    assert await asyncio.wait_for(probe, 1) == {"id": "T-1"}
    assert _state(client.breaker) is BreakerState.CLOSED


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "invalid_request"),
        (404, "ticket_not_found"),
        (409, "invalid_transition"),
        (409, "ticket_busy"),
        (422, "validation_failed"),
        (429, "rate_limited"),
    ],
)
async def test_4xx_answers_do_not_count_as_breaker_failures(
    harness: Harness, status: int, code: str
) -> None:
    client = _client(harness, threshold=2)
    harness.mock.get(TICKET, status=status, payload={"code": code}, repeat=5)

    for _ in range(5):
        with pytest.raises(ProblemResponse):
            await client.get_ticket(context(), "T-1")

    assert _state(client.breaker) is BreakerState.CLOSED


async def test_a_4xx_between_transient_failures_resets_the_consecutive_count(
    harness: Harness,
) -> None:
    client = _client(harness, threshold=2)
    harness.mock.get(TICKET, status=503)
    harness.mock.get(TICKET, status=404)
    harness.mock.get(TICKET, status=503)

    for _ in range(3):
        with pytest.raises(ProblemResponse):
            await client.get_ticket(context(), "T-1")

    assert _state(client.breaker) is BreakerState.CLOSED


def test_state_reports_closed_open_and_half_open() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=2, open_s=OPEN_S), clock)
    assert _state(breaker) is BreakerState.CLOSED
    assert breaker.before_call() is False  # a closed circuit lets calls out, none a probe
    assert _state(breaker) == "closed"

    breaker.record_failure(CALLER)
    assert _state(breaker) is BreakerState.CLOSED
    breaker.record_failure(CALLER)
    assert _state(breaker) is BreakerState.OPEN
    assert _state(breaker) == "open"

    clock.advance(OPEN_S)
    assert _state(breaker) is BreakerState.HALF_OPEN
    assert _state(breaker) == "half_open"

    breaker.before_call()
    breaker.record_success(CALLER)
    assert _state(breaker) is BreakerState.CLOSED


def test_an_open_breaker_reports_the_remaining_open_time() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=1, open_s=OPEN_S), clock)
    breaker.record_failure(CALLER)
    clock.advance(2.0)

    with pytest.raises(CircuitOpen) as caught:
        breaker.before_call()

    assert caught.value.retry_after_s == pytest.approx(OPEN_S - 2.0)


def test_half_open_admits_one_probe_and_an_abandoned_probe_frees_the_slot() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=1, open_s=OPEN_S), clock)
    breaker.record_failure(CALLER)
    clock.advance(OPEN_S)

    assert breaker.before_call() is True  # the probe
    with pytest.raises(CircuitOpen):
        breaker.before_call()

    breaker.record_abandoned()
    assert breaker.before_call() is True  # another probe
    with pytest.raises(CircuitOpen):
        breaker.before_call()


def test_a_failed_probe_restarts_the_open_period() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=3, open_s=OPEN_S), clock)
    for _ in range(3):
        breaker.record_failure(CALLER)
    clock.advance(OPEN_S)
    breaker.before_call()

    breaker.record_failure(CALLER)

    assert _state(breaker) is BreakerState.OPEN
    clock.advance(OPEN_S - 0.01)
    assert _state(breaker) is BreakerState.OPEN
    clock.advance(0.01)
    assert _state(breaker) is BreakerState.HALF_OPEN


# --- one caller cannot open the circuit for everyone (issue 14) ----------------------------


def _shared(threshold: int = 3, **extra: Any) -> tuple[FakeClock, CircuitBreaker]:
    clock = FakeClock()
    config = BreakerConfig(failure_threshold=threshold, open_s=OPEN_S, **extra)
    return clock, CircuitBreaker(config, clock)


def test_one_caller_failing_while_another_succeeds_does_not_open_the_circuit() -> None:
    _, breaker = _shared(threshold=3)
    breaker.record_success("quiet")
    for _ in range(30):
        breaker.record_failure("noisy")
        breaker.record_success("quiet")

    assert _state(breaker) is BreakerState.CLOSED
    assert breaker.before_call() is False


def test_failures_from_two_callers_open_the_circuit_when_two_are_active() -> None:
    _, breaker = _shared(threshold=3)
    breaker.record_success("a")
    breaker.record_success("b")

    breaker.record_failure("a")
    breaker.record_failure("a")
    assert _state(breaker) is BreakerState.CLOSED  # one caller failing: its own problem
    breaker.record_failure("b")

    assert _state(breaker) is BreakerState.OPEN


def test_a_lone_caller_still_opens_the_circuit_when_the_downstream_is_down() -> None:
    _, breaker = _shared(threshold=3)
    for _ in range(3):
        breaker.record_failure("only")

    assert _state(breaker) is BreakerState.OPEN


def test_a_caller_quiet_for_longer_than_the_window_no_longer_shields_the_circuit() -> None:
    clock, breaker = _shared(threshold=3, window_s=10.0)
    breaker.record_success("gone")
    clock.advance(10.5)
    for _ in range(3):
        breaker.record_failure("only")

    assert _state(breaker) is BreakerState.OPEN


def test_failures_older_than_the_window_do_not_count() -> None:
    clock, breaker = _shared(threshold=3, window_s=10.0)
    breaker.record_failure("a")
    breaker.record_failure("a")
    clock.advance(10.5)
    breaker.record_failure("a")

    assert _state(breaker) is BreakerState.CLOSED
    breaker.record_failure("a")
    breaker.record_failure("a")
    assert _state(breaker) is BreakerState.OPEN


def test_a_callers_success_clears_only_its_own_failures() -> None:
    _, breaker = _shared(threshold=4)
    breaker.record_failure("a")
    breaker.record_failure("a")
    breaker.record_failure("b")
    breaker.record_success("b")  # b is well again; a still fails
    breaker.record_failure("b")

    assert _state(breaker) is BreakerState.CLOSED  # a: 2, b: 1 in a row
    breaker.record_failure("b")
    assert _state(breaker) is BreakerState.OPEN


def test_heavy_timeouts_never_open_the_circuit_even_for_a_lone_caller() -> None:
    _, breaker = _shared(threshold=2)
    for _ in range(50):
        breaker.record_failure("uploader", heavy_timeout=True)

    assert _state(breaker) is BreakerState.CLOSED


def test_a_heavy_timeout_of_the_probe_reopens_the_circuit() -> None:
    clock, breaker = _shared(threshold=1)
    breaker.record_failure("a")
    clock.advance(OPEN_S)
    assert breaker.before_call() is True

    breaker.record_failure("uploader", heavy_timeout=True)

    assert _state(breaker) is BreakerState.OPEN


def test_a_probe_from_any_caller_closes_the_circuit_and_forgets_old_failures() -> None:
    clock, breaker = _shared(threshold=2)
    breaker.record_failure("a")
    breaker.record_failure("a")
    clock.advance(OPEN_S)
    breaker.before_call()

    breaker.record_success("b")
    breaker.record_failure("a")

    assert _state(breaker) is BreakerState.CLOSED


async def test_through_the_client_large_uploads_timing_out_leave_the_circuit_closed(
    harness: Harness,
) -> None:
    client = _client(harness, threshold=2)
    evidence = f"{TICKET}/evidence"
    harness.mock.post(evidence, exception=TimeoutError(), repeat=5)
    big = {"kind": "photo", "content_base64": "A" * (300 * 1024)}
    for _ in range(5):
        with pytest.raises(DispatchError):
            await client.act(context(), "T-1", "evidence", big)

    assert _state(client.breaker) is BreakerState.CLOSED
    harness.mock.post(evidence, exception=TimeoutError(), repeat=2)
    for _ in range(2):  # the same timeouts on small bodies are a sick downstream
        with pytest.raises(DispatchError):
            await client.act(context(), "T-1", "evidence", {"kind": "note"})
    assert _state(client.breaker) is BreakerState.OPEN


async def test_through_the_client_failures_are_counted_per_actor(harness: Harness) -> None:
    client = _client(harness, threshold=2)
    harness.mock.get(TICKET, payload={"id": "T-1"}, repeat=True)
    await client.get_ticket(context(actor_id="quiet"), "T-1")
    harness.mock.post(f"{TICKET}/evidence", status=503, repeat=True)
    for _ in range(4):
        with pytest.raises(ProblemResponse):
            await client.act(context(actor_id="noisy"), "T-1", "evidence", {"kind": "note"})

    assert _state(client.breaker) is BreakerState.CLOSED
    assert await client.get_ticket(context(actor_id="quiet"), "T-1") == {"id": "T-1"}
