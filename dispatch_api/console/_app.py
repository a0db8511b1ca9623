"""The console's aiohttp sub-application: templates, static files, middlewares, routes.

Mounted by dispatch-api's app factory at /console/, it reads the parent's state (pool,
services, settings, clock) through `request.config_dict`, so it adds no resources of its own.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from . import _approvals, _queue, _session, _ticket, _tools
from ._format import FILTERS
from ._headers import add_security_headers
from ._render import error_middleware


async def _home(request: web.Request) -> web.Response:
    return web.Response(status=303, headers={"Location": "/console/queue"})


def create_console() -> web.Application:
    """The console app, to mount with `app.add_subapp("/console/", create_console())`."""
    app = web.Application(middlewares=[error_middleware, _session.session_middleware])
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("dispatch_api.console", "templates"),
        # Customer names, reasons and arguments are attacker-controlled: every template
        # escapes everything, whatever its file name.
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(FILTERS)
    app.on_response_prepare.append(add_security_headers)
    app.cleanup_ctx.append(_tools.http_session)
    static = Path(str(resources.files("dispatch_api.console") / "static"))
    r = app.router
    r.add_get("/", _home)
    r.add_get("/sign-in", _session.sign_in_form)
    r.add_post("/sign-in", _session.sign_in)
    r.add_post("/sign-out", _session.sign_out)
    r.add_get("/queue", _queue.queue)
    r.add_get("/queue/rows", _queue.queue_rows)
    r.add_get("/tickets/{ticket_id}", _ticket.ticket)
    r.add_get("/tickets/{ticket_id}/evidence/{evidence_id}/content", _ticket.evidence_content)
    r.add_get("/approvals", _approvals.approvals)
    r.add_post("/approvals/{approval_id}/approve", _approvals.approve)
    r.add_post("/approvals/{approval_id}/deny", _approvals.deny)
    r.add_get("/tools", _tools.tools)
    r.add_static("/static/", static, append_version=False)
    return app
