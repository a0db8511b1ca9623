"""The tree stays readable: no module outside the tests grows past 500 lines (issue 15's
rule; a module that long has more than one job and should be split, as bench/database.py
was)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = sorted(
    path.parent.name
    for path in ROOT.glob("*/__init__.py")
    if path.parent.name not in {"tests", ".venv"}
)
MAX_LINES = 500


def test_the_layout_names_every_package_the_checks_cover() -> None:
    # Guards the glob above: a rename that made it find nothing would pass the check vacuously.
    assert {"bridge", "dispatch_api", "dispatch_bridge", "settings", "bench", "testkit"} <= set(
        PACKAGES
    )


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_outside_the_tests_exceeds_500_lines(package: str) -> None:
    too_long = {
        str(path.relative_to(ROOT)): lines
        for path in (ROOT / package).rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert too_long == {}, f"split these modules (at most {MAX_LINES} lines each): {too_long}"
