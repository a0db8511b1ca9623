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
