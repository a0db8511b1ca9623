"""Typed request state of the console."""

from __future__ import annotations

from aiohttp import web

from ..store._sessions import Session

#: The signed-in session, set by the session middleware on every page but sign-in.
SESSION = web.RequestKey("console_session", Session)
#: The session cookie's value, kept so that sign-out can end exactly this session.
COOKIE = web.RequestKey("console_cookie", str)
