"""The fault tests reuse the bridge harness: the real bridge over real HTTP in front of the
real dispatch-api, with a FaultProxy between the two."""

from tests.bridge.conftest import bridge, bridge_overrides, bridge_retry

__all__ = ["bridge", "bridge_overrides", "bridge_retry"]
