"""Per-key admission on its own: the counters behind agent_concurrency and agent_bytes."""

from __future__ import annotations

from bridge._fairness import KeyAdmission


def test_a_key_with_nothing_in_flight_is_admitted_whatever_the_size_of_its_call() -> None:
    admission = KeyAdmission(max_calls=2, max_bytes=1000)

    assert admission.refusal("a", 5000) is None


def test_limits_are_per_key_and_freed_when_calls_finish() -> None:
    admission = KeyAdmission(max_calls=2, max_bytes=1000)
    admission.enter("a", 600)

    refused = admission.refusal("a", 600)
    assert refused is not None
    assert refused.details["reason"] == "agent_bytes"
    assert admission.refusal("b", 600) is None
    admission.enter("a", 100)
    refused = admission.refusal("a", 1)
    assert refused is not None
    assert refused.details["reason"] == "agent_concurrency"

    admission.leave("a", 600)
    admission.leave("a", 100)
    assert admission.in_flight("a") == (0, 0)
    assert admission.refusal("a", 900) is None


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_key_sending_bodies_faster_than_its_byte_rate_is_told_when_its_budget_covers_one() -> (
    None
):
    clock = _Clock()
    admission = KeyAdmission(max_calls=10, max_bytes=1000, bytes_per_s=100, clock=clock)
    admission.enter("a", 600)
    admission.leave("a", 600)
    admission.enter("a", 400)  # the whole bucket spent, at once: a burst is allowed
    admission.leave("a", 400)

    refused = admission.refusal("a", 300)
    assert refused is not None
    assert refused.details == {"reason": "agent_byte_rate", "max_bytes_per_s": 100}
    assert 3000 <= (refused.retry_after_ms or 0) <= 3100  # 300 bytes at 100 bytes/s
    assert admission.refusal("b", 300) is None  # another key's budget is its own

    clock.now += 3.0
    assert admission.refusal("a", 300) is None


def test_a_body_larger_than_the_budget_needs_a_full_budget_and_leaves_a_debt() -> None:
    clock = _Clock()
    admission = KeyAdmission(max_calls=10, max_bytes=1000, bytes_per_s=100, clock=clock)

    assert admission.refusal("a", 5000) is None  # a full bucket lets even this one through
    admission.enter("a", 5000)
    admission.leave("a", 5000)
    clock.now += 10.0  # 1000 bytes of the 4000-byte debt paid

    refused = admission.refusal("a", 1)
    assert refused is not None
    assert refused.details["reason"] == "agent_byte_rate"
    clock.now += 31.0  # the debt paid, and a little more
    assert admission.refusal("a", 1) is None
