"""Every failure leaves as problem+json: ApiError as it is, aiohttp's HTTP errors translated,
anything unexpected as a 500 `internal` that reveals nothing."""

from __future__ import annotations

import logging

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from telemetry import log_context

from ..errors import (
    ApiError,
    BadRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
    problem,
)

PROBLEM_JSON = "application/problem+json"
_log = logging.getLogger("dispatch_api")


def problem_response(error: ApiError) -> web.Response:
    return web.Response(
        status=error.status,
        body=orjson.dumps(problem(error)),
        content_type=PROBLEM_JSON,
        headers=error.headers,
    )


def _translate(exc: web.HTTPException, request: web.Request) -> ApiError:
    if isinstance(exc, web.HTTPNotFound):
        return NotFound("route_not_found", f"no route {request.method} {request.path}")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = sorted(exc.allowed_methods)
        return MethodNotAllowed(
            "method_not_allowed",
            f"{request.method} is not allowed here; use {', '.join(allowed)}",
            extensions={"allowed_methods": allowed},
            headers={"Allow": ", ".join(allowed)},
        )
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return PayloadTooLarge("payload_too_large", "the request body is too large")
    if isinstance(exc, web.HTTPRequestTimeout):
        return RequestTimeout("request_timeout", exc.text or "the request body was too slow")
    if isinstance(exc, web.HTTPUnsupportedMediaType):
        return UnsupportedMediaType("unsupported_media_type", exc.text or "unsupported media type")
    return BadRequest("bad_request", exc.reason)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as error:
        return _answer(request, error)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _answer(request, _translate(exc, request))
    except Exception:
        _log.exception("unhandled error on %s %s", request.method, request.path)
        return _answer(request, _Internal())


def _answer(request: web.Request, error: ApiError) -> web.Response:
    log_context(request)["error_code"] = error.code
    return problem_response(error)


class _Internal(ApiError):
    def __init__(self) -> None:
        super().__init__("internal", "an internal error occurred; it has been logged")
