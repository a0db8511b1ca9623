"""Both services over real HTTP: dispatch-api (the `api` fixture, registered for every test
package) and the bridge in front of it (the fixtures of tests/bridge/conftest.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.bridge.conftest import Bridge, bridge, bridge_retry

__all__ = ["Bridge", "bridge", "bridge_retry"]


@pytest.fixture
def bridge_overrides() -> dict[str, Any]:
    """No rate limit: hostile input comes by the thousand here, and must be refused for what
    it is, not for its volume (tests/bridge/test_authorization.py covers the limit)."""
    return {"rate_limit_per_s": 1_000_000.0, "rate_limit_burst": 1_000_000}
