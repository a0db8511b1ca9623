"""How the console words times and links (pure functions, no I/O)."""

from __future__ import annotations

import pytest

from dispatch_api.console._format import countdown, duration, size, trace_link


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0m 00s"),
        (59.9, "0m 59s"),
        (3600 * 4, "4h 00m"),
        (86400 + 7200, "1d 2h"),
        (-300, "-5m 00s"),
        (None, "—"),
    ],
)
def test_durations_read_in_the_largest_two_units(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


def test_a_target_reads_as_met_running_or_breached() -> None:
    assert countdown(90, None) == {"text": "in 1m 30s", "breached": False}
    assert countdown(-90, None) == {"text": "breached 1m 30s ago", "breached": True}
    met = countdown(-90, "2026-11-27T10:00:00+00:00")
    assert met == {"text": "met 2026-11-27 10:00:00Z", "breached": False}


def test_sizes_read_in_bytes_kib_and_mib() -> None:
    assert [size(n) for n in (264, 2048, 5 * 1024 * 1024)] == ["264 B", "2.0 KiB", "5.0 MiB"]


def test_a_trace_link_cannot_be_reshaped_by_the_recorded_id() -> None:
    template = "https://jaeger.example/trace/{trace_id}"
    assert trace_link(template, "4bf92f35") == "https://jaeger.example/trace/4bf92f35"
    assert trace_link(template, "x/../admin?y=1#z") == (
        "https://jaeger.example/trace/x%2F..%2Fadmin%3Fy%3D1%23z"
    )
    assert trace_link(None, "4bf92f35") is None
    assert trace_link(template, None) is None
