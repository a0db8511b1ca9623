"""The command line is tested against the real services: the bridge harness of tests/bridge
(a bridge in front of a real dispatch-api on a real database) serves here too."""

from dispatch_bridge._ops import Endpoints
from tests.bridge.conftest import Bridge, bridge, bridge_overrides, bridge_retry

__all__ = ["Bridge", "bridge", "bridge_overrides", "bridge_retry", "operator_endpoints"]


def operator_endpoints(bridge: Bridge) -> Endpoints:
    """Where an operator command finds the harness's services, as a supervisor."""
    return Endpoints(
        api_url=str(bridge.api.session._base_url).rstrip("/"),
        api_token=bridge.api.tokens["supervisor"],
        bridge_url=str(bridge.session._base_url).rstrip("/"),
        agent_key=bridge.keys["supervisor"],
    )
