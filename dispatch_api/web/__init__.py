"""dispatch-api's HTTP layer (aiohttp): routes, auth, problem+json, body validation."""

from ._app import create_app, start_draining, utc_now

__all__ = ["create_app", "start_draining", "utc_now"]
