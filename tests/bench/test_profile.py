"""Profiles read from py-spy's collapsed stacks, and two set side by side (pure logic)."""

from __future__ import annotations

import pytest

from bench.profile import Profile, difference, self_time


def test_self_time_counts_each_stack_against_its_innermost_frames_component() -> None:
    lib = "/venv/lib/python3.11/site-packages/aiohttp/web_protocol.py"
    collapsed = "\n".join(
        [
            f"main (cli.py:1);start ({lib}:10);handle (bridge/_rest.py:33) 6",
            f"main (cli.py:1);start ({lib}:12) 3",
            "main (cli.py:1);wait (bridge/_rest.py:40) 1",
            "",
        ]
    )

    samples, counts = self_time(collapsed)

    assert samples == 10
    assert counts == {"bridge/_rest.py": 7, "aiohttp": 3}


def test_the_difference_ranks_components_by_the_extra_time_per_call() -> None:
    product = Profile("bridge", 200.0, {"aiohttp": 0.5, "bridge/_rest.py": 0.2, "asyncio": 0.3})
    floor = Profile("proxy", 100.0, {"aiohttp": 0.8, "asyncio": 0.1, "bench/proxy.py": 0.1})

    rows = difference(product, floor, top=3)

    # asyncio +50 µs, the bridge's own module +40 (none in the floor), aiohttp +20; the
    # floor's own module (-10) is left out
    assert [name for name, _, _ in rows] == ["asyncio", "bridge/_rest.py", "aiohttp"]
    assert rows[0][1:] == pytest.approx((60.0, 10.0))
    assert rows[1][1:] == pytest.approx((40.0, 0.0))
    assert rows[2][1:] == pytest.approx((100.0, 80.0))
