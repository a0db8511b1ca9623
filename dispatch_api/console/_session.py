"""Sign-in, sign-out, the session middleware and CSRF.

A dispatch-api token is exchanged for a random cookie (HttpOnly, SameSite=Strict, Path
/console, Secure over TLS) naming a row in `console_sessions`. Every form carries the
session's CSRF token; a POST without the right one is refused with 403 before its handler
runs. The sign-in form itself is protected by a double-submit cookie (`console_csrf`), since
there is no session yet. The token never appears in a URL, a page or a log line.
"""

from __future__ import annotations

import hmac
import secrets
import uuid
from datetime import timedelta

from aiohttp import web
from aiohttp.typedefs import Handler

from telemetry import current_ids, log_context

from ..domain import Actor, ActorType
from ..errors import Forbidden, PayloadTooLarge
from ..service import Caller
from ..store import Principal, connection, sessions
from ..web._keys import CLOCK, CORRELATION_ID, POOL, PRINCIPALS, SETTINGS
from ._keys import COOKIE, SESSION
from ._render import page

SESSION_COOKIE = "dispatch_console"
SIGN_IN_CSRF_COOKIE = "console_csrf"
COOKIE_PATH = "/console"
SIGN_IN = "/console/sign-in"
#: Console forms are a token, a reason, a few ids: anything larger is not one of them.
MAX_FORM_BYTES = 16 * 1024
_OPEN_PATHS = frozenset({SIGN_IN})


def caller(request: web.Request) -> Caller:
    """The signed-in person as the services' caller: a human actor with their role."""
    principal = request[SESSION].principal
    trace_id, _ = current_ids()
    return Caller(
        principal=principal,
        actor=Actor(type=ActorType.HUMAN, id=principal.id, role=principal.role),
        request_id=str(uuid.uuid4()),
        correlation_id=request.get(CORRELATION_ID),
        trace_id=trace_id,
    )


async def form(request: web.Request) -> dict[str, str]:
    """The posted form's text fields; 413 when the body is larger than any console form
    (or of unknown length: browsers always send Content-Length with a form)."""
    if not request.body_exists:
        return {}
    if request.content_length is None or request.content_length > MAX_FORM_BYTES:
        raise PayloadTooLarge(
            "payload_too_large", "a console form is at most 16 KiB, sent with Content-Length"
        )
    posted = await request.post()
    return {k: v for k, v in posted.items() if isinstance(v, str)}


def _who(principal: Principal) -> dict[str, str]:
    return {"actor_type": "human", "actor_id": principal.id, "role": str(principal.role)}


def _same(given: str | None, expected: str | None) -> bool:
    return bool(given) and bool(expected) and hmac.compare_digest(str(given), str(expected))


def _csrf_refused() -> Forbidden:
    return Forbidden(
        "csrf_refused",
        "this form is out of date or did not come from the console; reload the page and retry",
    )


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Resolve the session of every page but sign-in and static files; check CSRF on POST.

    No live session: a GET is sent to sign-in (303), a POST is refused (403)."""
    if request.path in _OPEN_PATHS or request.path.startswith("/console/static/"):
        return await handler(request)
    cookie = request.cookies.get(SESSION_COOKIE, "")
    found = None
    if cookie:
        async with connection(request.config_dict[POOL]) as conn:
            found = await sessions.find(conn, cookie, request.config_dict[CLOCK]())
    if found is None:
        if request.method == "POST":
            raise Forbidden("not_signed_in", "your console session has ended; sign in again")
        return web.Response(status=303, headers={"Location": SIGN_IN})
    request[SESSION] = found
    request[COOKIE] = cookie
    log_context(request).update(_who(found.principal))
    if request.method == "POST":
        fields = await form(request)
        if not _same(fields.get("csrf_token"), found.csrf_token):
            raise _csrf_refused()
    return await handler(request)


async def sign_in_form(request: web.Request) -> web.StreamResponse:
    return _sign_in_page(request, 200, None)


def _sign_in_page(request: web.Request, status: int, message: str | None) -> web.StreamResponse:
    # The pre-session CSRF value: kept if the browser has one, so two open tabs both work.
    csrf = request.cookies.get(SIGN_IN_CSRF_COOKIE) or secrets.token_urlsafe(32)
    response = page(request, "sign_in.html", {"csrf_token": csrf, "message": message}, status)
    response.set_cookie(
        SIGN_IN_CSRF_COOKIE,
        csrf,
        path=COOKIE_PATH,
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
    )
    return response


async def sign_in(request: web.Request) -> web.StreamResponse:
    fields = await form(request)
    if not _same(fields.get("csrf_token"), request.cookies.get(SIGN_IN_CSRF_COOKIE)):
        raise _csrf_refused()
    token = fields.get("token", "").strip()
    app = request.config_dict
    principal = await app[PRINCIPALS].lookup(app[POOL], token) if token else None
    if principal is None or principal.trusted_gateway:
        # The same answer for both: a gateway token is a machine's, and saying so would
        # confirm to whoever holds one that it is valid.
        log_context(request)["error_code"] = "sign_in_refused"
        return _sign_in_page(request, 401, "That token was not accepted. Check it and try again.")
    lifetime = timedelta(minutes=app[SETTINGS].console_session_minutes)
    async with connection(app[POOL]) as conn:
        cookie, _ = await sessions.start(conn, principal, app[CLOCK](), lifetime)
    log_context(request).update(_who(principal))
    response = web.Response(status=303, headers={"Location": "/console/queue"})
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        path=COOKIE_PATH,
        max_age=int(lifetime.total_seconds()),
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
    )
    response.del_cookie(SIGN_IN_CSRF_COOKIE, path=COOKIE_PATH)
    return response


async def sign_out(request: web.Request) -> web.StreamResponse:
    async with connection(request.config_dict[POOL]) as conn:
        await sessions.end(conn, request[COOKIE])
    response = web.Response(status=303, headers={"Location": SIGN_IN})
    response.del_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response


def _secure(request: web.Request) -> bool:
    return request.secure or request.config_dict[SETTINGS].console_secure_cookies
