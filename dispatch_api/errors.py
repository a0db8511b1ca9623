"""The one error tree of dispatch-api; every member renders as RFC 9457 problem+json.

    ApiError                      status, code, title, detail, extensions
    ├── BadRequest           400  malformed JSON, bad ids, bad headers, bad cursor
    │   └── IdempotencyKeyMissing   400  a mutation without Idempotency-Key
    ├── Unauthenticated      401  no or unknown bearer token
    ├── Forbidden            403  role or assignment forbids it, untrusted actor headers
    ├── NotFound             404  unknown ticket, evidence or route
    ├── MethodNotAllowed     405
    ├── RequestTimeout       408  the body did not arrive within the body timeout
    ├── Conflict             409  invalid transition, key or ticket busy (Retry-After)
    ├── PayloadTooLarge      413
    ├── UnsupportedMediaType 415
    ├── Unprocessable        422  schema violations, evidence missing, key reused
    └── Unavailable          503  database unreachable

asyncpg and aiohttp errors are translated into this tree at the web boundary
(`dispatch_api.web._problems`), never passed upward raw.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class ApiError(Exception):
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        extensions: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.extensions = dict(extensions or {})
        self.headers = dict(headers or {})


class BadRequest(ApiError):
    status = 400
    title = "Bad request"


class IdempotencyKeyMissing(BadRequest):
    def __init__(self) -> None:
        super().__init__(
            "idempotency_key_missing",
            "mutating requests need an Idempotency-Key header (a UUID is recommended)",
        )


class Unauthenticated(ApiError):
    status = 401
    title = "Unauthenticated"


class Forbidden(ApiError):
    status = 403
    title = "Forbidden"


class NotFound(ApiError):
    status = 404
    title = "Not found"


class MethodNotAllowed(ApiError):
    status = 405
    title = "Method not allowed"


class Conflict(ApiError):
    status = 409
    title = "Conflict"


class RequestTimeout(ApiError):
    status = 408
    title = "Request timeout"


class PayloadTooLarge(ApiError):
    status = 413
    title = "Payload too large"


class UnsupportedMediaType(ApiError):
    status = 415
    title = "Unsupported media type"


class Unprocessable(ApiError):
    status = 422
    title = "Unprocessable content"


class Unavailable(ApiError):
    status = 503
    title = "Service unavailable"


PROBLEM_TYPE_BASE = "https://dispatch-bridge.dev/problems/"


def problem(error: ApiError) -> dict[str, Any]:
    """The RFC 9457 body of `error`: type, title, status, detail, code, then extensions."""
    return {
        "type": PROBLEM_TYPE_BASE + error.code,
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "code": error.code,
        **error.extensions,
    }
