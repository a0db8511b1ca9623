"""Security headers on every /console response, errors and redirects included."""

from __future__ import annotations

from aiohttp import web

#: No inline script or style, nothing from elsewhere, never framed, forms post only here.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
STATIC_PREFIX = "/console/static/"


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: runs for every response the console app sends."""
    response.headers.update(SECURITY_HEADERS)
    # Pages show who is signed in and what they may see: no cache keeps them. Static files
    # are the same for everyone.
    if not request.path.startswith(STATIC_PREFIX):
        response.headers["Cache-Control"] = "no-store"
