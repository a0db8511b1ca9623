"""The command line is tested against the real services: the bridge harness of tests/bridge
(a bridge in front of a real dispatch-api on a real database) serves here too."""

from tests.bridge.conftest import Bridge, bridge, bridge_overrides, bridge_retry

__all__ = ["Bridge", "bridge", "bridge_overrides", "bridge_retry"]
