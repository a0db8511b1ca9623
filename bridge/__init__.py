"""The agent-facing bridge service (its command line is `dispatch_bridge`).

settings.py    BridgeSettings from DISPATCH_* and TOML ([bridge], [retry], [oauth], [[agents]])
_agents.py     API-key authentication and per-key rate limits
_oauth*.py     OAuth access tokens (JWT) checked into agents; _jwks.py the issuer's keys
_scopes.py     the OAuth scope of each tool
_resource.py   RFC 9728 metadata and the WWW-Authenticate challenges
_pipeline.py   the invocation pipeline REST and MCP share
_edge.py       what both do first: correlation id, agent key, rate limit, body reading
_rest.py       REST transport: /v1/tools, /v1/tools/{name}/invoke, /v1/config, ...
_app.py        the aiohttp application, health and lifecycle
"""

from ._app import create_bridge_app, start_draining

__all__ = ["create_bridge_app", "start_draining"]
