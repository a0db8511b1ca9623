"""Reading an OpenAPI document against the app that serves it (both services' tests)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aiohttp import hdrs, web

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

#: The operator console's pages (HTML for people, behind a session cookie) are not the API
#: the document describes; their own tests cover them (tests/dispatch_api/console/).
CONSOLE_PREFIX = "/console"

Document = dict[str, Any]
Operation = tuple[str, str, dict[str, Any]]


def operations(document: Document) -> Iterator[Operation]:
    """(METHOD, path template, operation) for every operation in the document."""
    for path, item in document["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                yield method.upper(), path, item[method]


def served_routes(app: web.Application) -> set[tuple[str, str]]:
    """(METHOD, path template) of every route `app` serves. The router is filled when the
    app is built; nothing needs to be started."""
    routes = set()
    for route in app.router.routes():
        if route.method == hdrs.METH_HEAD:
            continue  # aiohttp adds HEAD to every GET route
        assert route.resource is not None
        if route.resource.canonical.startswith(CONSOLE_PREFIX):
            continue
        routes.add((route.method, route.resource.canonical))
    return routes
