"""Per-key admission on its own: the counters behind agent_concurrency, agent_bytes and
agent_byte_rate."""

from __future__ import annotations

from bridge._fairness import KeyAdmission
from tests.dispatch_client.fakes import FakeClock
from tools import ToolError


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


#: Sizes in KiB: only bodies of 256 KiB and more (uploads) are given turns.
KB = 1024


def test_a_key_sending_bodies_faster_than_its_byte_rate_is_told_when_its_budget_covers_one() -> (
    None
):
    clock = FakeClock()
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


def test_a_keys_refused_calls_are_given_turns_one_after_another() -> None:
    clock = FakeClock()
    admission = KeyAdmission(max_calls=10, max_bytes=1000 * KB, bytes_per_s=100 * KB, clock=clock)
    admission.enter("a", 1000 * KB)  # the whole bucket spent
    admission.leave("a", 1000 * KB)

    told = []
    for _ in range(3):  # three of its callers refused the same moment
        refused = admission.refusal("a", 300 * KB)
        assert refused is not None
        assert refused.details["reason"] == "agent_byte_rate"
        told.append(refused.retry_after_ms or 0)
    turns = [3000, 6000, 9000]  # 300 KiB at 100 KiB/s each, then up to 100 ms of jitter
    assert all(t <= ms <= t + 100 for ms, t in zip(told, turns, strict=True)), told
    assert admission.refusal("b", 300 * KB) is None  # another key's turns are its own

    clock.now += 3.0  # the first comes back at its turn and is admitted
    assert admission.refusal("a", 300 * KB) is None
    admission.enter("a", 300 * KB)
    admission.leave("a", 300 * KB)
    clock.now += 3.0  # and so is the second, at its own
    assert admission.refusal("a", 300 * KB) is None


def test_a_key_refused_for_its_bytes_in_flight_is_told_its_turn_after_the_bodies_held_unread() -> (
    None
):
    clock = FakeClock()
    admission = KeyAdmission(max_calls=10, max_bytes=1000 * KB, bytes_per_s=100 * KB, clock=clock)
    admission.enter("a", 700 * KB, charge=False)  # held from admission, its body not read yet

    refused = admission.refusal("a", 500 * KB)

    assert refused is not None
    assert refused.details["reason"] == "agent_bytes"
    # The budget is full now, but the 700 KiB are spent as soon as read: 200 KiB short.
    assert 2000 <= (refused.retry_after_ms or 0) <= 2100
    admission.leave("a", 700 * KB)  # refused for its size, never read: nothing spent
    assert admission.refusal("a", 500 * KB) is None


def test_a_small_call_waits_for_its_own_bytes_not_behind_the_keys_uploads() -> None:
    clock = FakeClock()
    admission = KeyAdmission(max_calls=10, max_bytes=2**20, bytes_per_s=2**16, clock=clock)
    admission.enter("a", 2**20)
    admission.leave("a", 2**20)
    for _ in range(3):  # three uploads refused: turns at 16, 32 and 48 s
        assert admission.refusal("a", 2**20) is not None

    refused = admission.refusal("a", 2**10)

    assert refused is not None
    assert 15 <= (refused.retry_after_ms or 0) <= 116  # 1 KiB at 64 KiB/s, plus jitter


def test_turns_are_promised_at_most_a_minute_ahead() -> None:
    clock = FakeClock()
    admission = KeyAdmission(max_calls=10, max_bytes=1000 * KB, bytes_per_s=100 * KB, clock=clock)
    admission.enter("a", 1000 * KB)
    admission.leave("a", 1000 * KB)

    told = [(admission.refusal("a", 1000 * KB) or _never()).retry_after_ms or 0 for _ in range(10)]

    assert [ms // 1000 for ms in told[:5]] == [10, 20, 30, 40, 50]  # 1000 KiB, 10 s each
    assert all(60_000 <= ms <= 60_100 for ms in told[5:])  # callers that may never come back


def _never() -> ToolError:
    raise AssertionError("admitted")


def test_once_the_promised_turns_are_past_a_refusal_waits_only_for_its_own_bytes() -> None:
    clock = FakeClock()
    admission = KeyAdmission(max_calls=10, max_bytes=1000 * KB, bytes_per_s=100 * KB, clock=clock)
    admission.enter("a", 1000 * KB)
    admission.leave("a", 1000 * KB)
    assert admission.refusal("a", 300 * KB) is not None
    assert admission.refusal("a", 300 * KB) is not None  # promised a turn at 6 s
    clock.now += 6.0  # nobody came back; 600 KiB of budget again
    admission.enter("a", 600 * KB)
    admission.leave("a", 600 * KB)

    refused = admission.refusal("a", 300 * KB)
    assert refused is not None
    assert 3000 <= (refused.retry_after_ms or 0) <= 3100  # its own 300 KiB, no more


def test_a_key_refused_for_its_bytes_in_flight_is_told_its_turn_at_the_byte_rate() -> None:
    clock = FakeClock()
    admission = KeyAdmission(max_calls=10, max_bytes=1000 * KB, bytes_per_s=100 * KB, clock=clock)
    admission.enter("a", 900 * KB)  # in flight, and spent

    refused = admission.refusal("a", 500 * KB)
    assert refused is not None
    assert refused.details["reason"] == "agent_bytes"
    assert 4000 <= (refused.retry_after_ms or 0) <= 4100  # 500 KiB, 100 left, 100 KiB/s


def test_a_call_held_before_its_body_is_read_spends_the_byte_rate_only_when_charged() -> None:
    clock = FakeClock()
    admission = KeyAdmission(max_calls=10, max_bytes=1000, bytes_per_s=100, clock=clock)
    admission.enter("a", 900, charge=False)  # held from admission; refused for its size later
    assert admission.in_flight("a") == (1, 900)
    admission.leave("a", 900)
    assert admission.refusal("a", 900) is None  # a body never read cost the key nothing

    admission.enter("a", 900, charge=False)
    admission.charge("a", 900)  # read and started: now it is spent
    admission.leave("a", 900)
    refused = admission.refusal("a", 900)
    assert refused is not None
    assert (refused.details or {})["reason"] == "agent_byte_rate"


def test_a_body_larger_than_the_budget_needs_a_full_budget_and_leaves_a_debt() -> None:
    clock = FakeClock()
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


# --- whom the overload guard refuses ---------------------------------------------------


def test_under_overload_a_key_holding_most_of_the_work_in_flight_is_the_only_one_shed() -> None:
    admission = KeyAdmission(max_calls=16, max_bytes=16 * 2**20)
    admission.enter("uploader", 7 * 2**20)  # one 7 MB evidence upload
    for key in ("reader-1", "reader-2", "reader-3"):
        admission.enter(key, 60)

    assert admission.sheds("uploader") is True
    assert [admission.sheds(k) for k in ("reader-1", "reader-2", "newcomer")] == [False] * 3


def test_under_overload_every_key_is_shed_when_no_key_holds_most_of_the_work() -> None:
    admission = KeyAdmission(max_calls=16, max_bytes=16 * 2**20)
    assert admission.sheds("anyone") is True  # nothing in flight: the lag is no key's doing

    for key in ("a", "b", "c"):
        admission.enter(key, 60)
        admission.enter(key, 60)
    assert [admission.sheds(k) for k in ("a", "b", "c", "newcomer")] == [True] * 4

    tie = KeyAdmission(max_calls=16, max_bytes=16 * 2**20)
    tie.enter("x", 60)
    tie.enter("y", 60)
    assert [tie.sheds(k) for k in ("x", "y", "newcomer")] == [True] * 3  # half is not most


def test_one_key_alone_is_shed_under_overload_and_others_once_its_work_ends() -> None:
    admission = KeyAdmission(max_calls=16, max_bytes=16 * 2**20)
    for _ in range(8):
        admission.enter("only", 100)
    assert admission.sheds("only") is True
    assert admission.sheds("other") is False

    for _ in range(8):
        admission.leave("only", 100)
    assert admission.sheds("other") is True


def test_a_key_that_just_sent_a_heavy_body_is_shed_even_with_nothing_in_flight() -> None:
    """Its upload was read and parsed before it counted as in flight (or refused and its
    body still read off the socket): the lag looks back over that, so for a moment the key
    is the one refused, and then no longer."""
    clock = FakeClock()
    admission = KeyAdmission(max_calls=16, max_bytes=16 * 2**20, clock=clock)
    admission.refusal("uploader", 7 * 2**20)  # asked at admission, before the body is read
    admission.enter("reader", 60)

    assert admission.sheds("uploader") is True
    assert [admission.sheds(k) for k in ("reader", "newcomer")] == [False, False]

    clock.now += 1.0
    assert [admission.sheds(k) for k in ("uploader", "reader", "newcomer")] == [True] * 3
