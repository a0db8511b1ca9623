"""Rendering: every page through one function, so each gets the layout's context (who is
signed in, the CSRF token of the sign-out form); errors as HTML pages, not problem+json."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from aiohttp.typedefs import Handler

from telemetry import log_context

from ..errors import ApiError
from ._keys import SESSION

_log = logging.getLogger("dispatch_api")


def page(
    request: web.Request, template: str, context: Mapping[str, Any], status: int = 200
) -> web.Response:
    session = request.get(SESSION)
    full = {
        "principal": None if session is None else session.principal,
        "session_csrf": None if session is None else session.csrf_token,
        **context,
    }
    return aiohttp_jinja2.render_template(template, request, full, status=status)


def error_page(request: web.Request, status: int, title: str, detail: str) -> web.Response:
    return page(request, "error.html", {"title": title, "detail": detail}, status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A person reads the failure: 4xx as a page saying what to do, 500 as a page that
    reveals nothing (the exception is logged)."""
    try:
        return await handler(request)
    except ApiError as error:
        log_context(request)["error_code"] = error.code
        response = error_page(request, error.status, error.title, error.detail)
        response.headers.update(error.headers)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        log_context(request)["error_code"] = f"http_{exc.status}"
        return error_page(request, exc.status, exc.reason, "There is no such page here.")
    except Exception:
        _log.exception("unhandled error on %s %s", request.method, request.path)
        log_context(request)["error_code"] = "internal"
        return error_page(
            request, 500, "Internal error", "Something went wrong; it has been logged."
        )
