"""The adaptive limit on calls in flight (bridge/_concurrency.py), on a clock the test
moves: it starts open, shrinks when the calls' latency says they queue, grows back when it
no longer does, holds a lasting overload at its floor, follows a dispatch-api that became
slower for good, and keeps to its floor and ceiling."""

from __future__ import annotations

from bridge._concurrency import AdaptiveLimit
from tests.dispatch_client.fakes import FakeClock

WINDOW_S = 0.05


def _limit(min_limit: int = 4, max_limit: int = 64) -> tuple[AdaptiveLimit, FakeClock]:
    clock = FakeClock()
    return AdaptiveLimit(min_limit, max_limit, tolerance=2.0, window_s=WINDOW_S, clock=clock), clock


def window(limit: AdaptiveLimit, clock: FakeClock, latency_s: float, calls: int = 10) -> None:
    """A window's time passes, then `calls` calls of `latency_s` each, one after another."""
    clock.now += WINDOW_S
    for _ in range(calls):
        started = limit.start()
        clock.now += latency_s
        limit.end(started)


def test_a_new_limit_admits_up_to_its_ceiling_and_no_further() -> None:
    limit, _ = _limit(max_limit=8)

    for _ in range(8):
        assert not limit.full()
        limit.start()

    assert limit.limit == 8
    assert limit.full()


def test_calls_that_do_not_queue_leave_the_limit_open() -> None:
    limit, clock = _limit()

    for _ in range(20):
        window(limit, clock, 0.002)

    assert limit.limit == 64


def test_latency_beyond_the_tolerance_shrinks_the_limit_by_at_most_half_a_window() -> None:
    limit, clock = _limit()
    window(limit, clock, 0.002)  # the baseline

    window(limit, clock, 0.005)  # 2.5x: the limit shrinks in proportion (2 / 2.5)
    after_one = limit.limit
    window(limit, clock, 0.050)  # 25x: by half, not more
    after_two = limit.limit

    assert after_one == int(64 * 0.8)
    assert after_two == int(64 * 0.8 * 0.5)


def test_latency_within_the_tolerance_shrinks_nothing() -> None:
    limit, clock = _limit()
    window(limit, clock, 0.002)

    window(limit, clock, 0.0039)  # just under twice the baseline: within the tolerance

    assert limit.limit == 64


def test_the_limit_never_goes_below_its_floor() -> None:
    limit, clock = _limit(min_limit=4)
    window(limit, clock, 0.001)

    for _ in range(12):
        window(limit, clock, 0.1)

    assert limit.limit == 4
    for _ in range(4):
        limit.start()
    assert limit.full()


def _at_the_floor() -> tuple[AdaptiveLimit, FakeClock]:
    """A limit brought down to its floor (4) by a queue, after a baseline of 1 ms."""
    limit, clock = _limit()
    window(limit, clock, 0.001)
    for _ in range(6):
        window(limit, clock, 0.1)
    assert limit.limit == 4
    return limit, clock


def test_the_limit_grows_back_by_its_square_root_once_calls_stop_queueing() -> None:
    limit, clock = _at_the_floor()

    window(limit, clock, 0.001)  # as quick as unloaded: by its square root
    window(limit, clock, 0.001)
    assert limit.limit == 8  # 4 + 2, then 6 + 2.45

    for _ in range(30):
        window(limit, clock, 0.001)
    assert limit.limit == 64  # and no further than the ceiling


def test_near_the_tolerance_the_limit_grows_by_one_a_window() -> None:
    # Calls somewhat slower than unloaded ones (a short queue) probe for more one call at a
    # time: the limit sits near the knee instead of overshooting it.
    limit, clock = _at_the_floor()

    window(limit, clock, 0.0018)
    window(limit, clock, 0.0018)

    assert limit.limit == 6


def full_window(limit: AdaptiveLimit, clock: FakeClock, latency_s: float) -> None:
    """A window of an overload: as many calls as the limit admits, all at once, and one
    more that finds the limit full; each of the admitted ones takes `latency_s`."""
    clock.now += WINDOW_S
    admitted = [limit.start() for _ in range(max(limit.limit, 10))]
    assert limit.full()
    clock.now += latency_s
    for started in admitted:
        limit.end(started)


def full_windows_until(
    limit: AdaptiveLimit, clock: FakeClock, until: float, latency_s: float
) -> None:
    """Windows of an overload, one after another, until the clock reads `until`."""
    while clock.now < until:
        full_window(limit, clock, latency_s)


def test_a_lasting_overload_keeps_the_limit_at_its_floor() -> None:
    # Every window of a lasting overload finds the limit full: their queued latency must
    # not become the baseline, or "twice the baseline" admits twice a queued latency and
    # the limit climbs off its floor while the overload goes on.
    limit, clock = _limit()
    window(limit, clock, 0.001)

    full_windows_until(limit, clock, clock.now + 9.0, 0.003)

    assert limit.limit == 4


def test_a_lasting_slowdown_becomes_the_new_baseline() -> None:
    # dispatch-api became four times slower for good (not a queue): once forty windows
    # below the limit were no quicker, the limit grows again instead of staying at its floor.
    limit, clock = _limit()
    window(limit, clock, 0.002)
    for _ in range(8):
        window(limit, clock, 0.008)
    assert limit.limit == 4

    for _ in range(60):
        window(limit, clock, 0.008)

    assert limit.limit == 64


def test_a_slowdown_under_load_that_keeps_the_limit_full_is_learnt_after_ten_seconds() -> None:
    # Left out of the baseline for good, full windows would hold a slower dispatch-api at
    # the floor for as long as its load lasts.
    limit, clock = _limit()
    window(limit, clock, 0.002)
    started = clock.now
    full_windows_until(limit, clock, started + 9.0, 0.008)
    assert limit.limit == 4

    full_windows_until(limit, clock, started + 15.0, 0.008)

    assert limit.limit > 16


def test_a_window_needs_ten_calls_so_a_few_slow_ones_change_nothing() -> None:
    limit, clock = _limit()
    window(limit, clock, 0.002)

    window(limit, clock, 0.5, calls=9)

    assert limit.limit == 64


def test_one_slow_call_among_quick_ones_is_not_a_queue() -> None:
    # The window's median, not its mean: a single timeout is that call's trouble.
    limit, clock = _limit()
    window(limit, clock, 0.002)

    window(limit, clock, 0.002, calls=9)
    window(limit, clock, 2.0, calls=1)

    assert limit.limit == 64


def test_a_floor_above_the_ceiling_makes_a_fixed_cap() -> None:
    limit, clock = _limit(min_limit=16, max_limit=2)
    window(limit, clock, 0.001)
    window(limit, clock, 0.5)

    assert limit.limit == 2


def test_calls_in_flight_are_counted_until_they_end() -> None:
    limit, _ = _limit(max_limit=2)
    first = limit.start()
    limit.start()
    assert limit.full()

    limit.end(first)

    assert limit.in_flight == 1
    assert not limit.full()
