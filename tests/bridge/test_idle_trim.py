"""Freed memory goes back to the OS once a burst is over (bridge/_trim.py): only after two
checks in a row with no call in flight or started, only after RSS grew by the threshold,
once per growth. The decision is
pure logic (fake RSS and trim); glibc's malloc_trim itself is called for real."""

from __future__ import annotations

import sys

import pytest

from bridge._trim import IdleTrim, glibc_trim, resident_bytes

MB = 1024 * 1024


class _Process:
    """A fake process: its RSS, its calls in flight, and what a trim gives back."""

    def __init__(self) -> None:
        self.rss = 70 * MB
        self.busy = 0
        self.started = 0
        self.trims = 0
        self.stays = 80 * MB  # what a trim cannot give back (live data, pymalloc arenas)

    def trim(self) -> None:
        self.trims += 1
        self.rss = min(self.rss, self.stays)

    def trimmer(self, *, can_trim: bool = True) -> IdleTrim:
        return IdleTrim(
            lambda: (self.busy, self.started),
            16 * MB,
            trim=self.trim if can_trim else None,
            rss=lambda: self.rss,
        )


def test_after_a_burst_the_idle_bridge_trims_once_and_not_again_until_it_grows() -> None:
    process = _Process()
    trimmer = process.trimmer()
    process.rss, process.busy, process.started = 140 * MB, 2000, 2000  # the burst

    during = trimmer.check()
    process.busy = 0
    ended = trimmer.check()  # the last call just ended: its connection may still be open
    after = trimmer.check()
    again = trimmer.check()
    process.rss = 90 * MB  # grew, but less than the threshold over what stayed
    small = trimmer.check()
    process.rss = 100 * MB
    grown = trimmer.check()

    assert (during, ended) == (None, None)  # never while calls are in flight, nor just after
    assert after == (140 * MB, 80 * MB)
    assert (again, small) == (None, None)  # what could not be given back is not retried
    assert grown == (100 * MB, 80 * MB)
    assert process.trims == 2


def test_a_steady_trickle_of_calls_never_meets_a_trim() -> None:
    process = _Process()
    trimmer = process.trimmer()
    process.rss = 200 * MB
    seen = []
    for _ in range(5):  # one short call between each two checks: none in flight at a check
        process.started += 1
        seen.append(trimmer.check())
    process.busy = 1
    seen.append(trimmer.check())  # a call in flight, none started since

    assert seen == [None] * 6
    assert process.trims == 0
    process.busy = 0
    assert trimmer.check() is None
    assert trimmer.check() == (200 * MB, 80 * MB)  # a whole interval with no call


def test_below_the_threshold_or_without_malloc_trim_nothing_is_done() -> None:
    process = _Process()
    small = process.trimmer()
    process.rss = 85 * MB

    assert [small.check(), small.check()] == [None, None]
    process.rss = 200 * MB
    without = process.trimmer(can_trim=False)
    assert [without.check(), without.check()] == [None, None]
    assert process.trims == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc")
def test_on_linux_with_glibc_the_real_trim_and_rss_reading_work() -> None:
    trim = glibc_trim()
    rss = resident_bytes()

    assert trim is not None
    trim()
    assert rss is not None
    assert rss > 10 * MB
