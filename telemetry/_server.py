"""The listening side both services share: timeouts, a connection cap, quiet descriptor
exhaustion.

aiohttp bounds an idle keep-alive connection (`keepalive_timeout`) but not a request head
trickled in byte by byte, nor a body, nor how many connections it holds open. Here:

- `GuardedSite` listens like `web.TCPSite`, wrapping each connection so that a new one must
  deliver its first request head within `header_timeout_s` and that connections beyond the
  cap are answered 503 at once, without reading them;
- `body_deadline` bounds the time a request body may take to arrive (408 after it);
- `drop_unread_body` answers a refusal that left its body unsent as the last on its
  connection, and drops the rest of that body unparsed;
- `quiet_accept_errors` turns asyncio's "socket.accept() out of system resource" traceback,
  which CPython 3.11 logs once per pending connection per retry (thousands a second), into
  one line per interval with a count;
- `connection_cap` keeps the cap below the process's descriptor limit, so the cap refuses
  before accept() runs out of descriptors.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import orjson
from aiohttp import hdrs, web

from ._reads import ExactReads

_log = logging.getLogger("telemetry.server")

#: A request body this large (only inline evidence is) took one long event-loop step to read
#: and parse; the services yield to the loop before the next long step of its handling.
YIELD_AFTER_BODY_BYTES = 1024 * 1024
#: Seconds a request body may take to arrive, set on the app by the entrypoint.
BODY_TIMEOUT_S: Final = web.AppKey("body_timeout_s", float)
_DEFAULT_BODY_TIMEOUT_S = 60.0
#: A refused connection gets this long to read its 503 before it is closed.
_REFUSAL_LINGER_S = 1.0
#: Beyond this many refused connections still lingering, new ones are closed at once: a
#: flood must not turn the refusals themselves into the descriptor exhaustion.
_MAX_LINGERING = 64
#: Descriptors kept out of the cap for everything else a process opens (listeners, logs,
#: the database pool or the client connections to dispatch-api).
_RESERVED_DESCRIPTORS = 64
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """How long a client may take and how many connections it may hold (both services)."""

    #: A kept-alive connection with no request for this long is closed (aiohttp's
    #: keep-alive timeout; it also bounds a later request head on that connection).
    idle_timeout_s: float = 75.0
    #: A new connection must deliver its first complete request head within this long.
    header_timeout_s: float = 10.0
    #: A request body must arrive completely within this long (408 otherwise).
    body_timeout_s: float = 60.0
    #: Open connections beyond this are answered 503 and closed; lowered at start-up to fit
    #: the descriptor limit (RLIMIT_NOFILE).
    max_connections: int = 1024

    def __post_init__(self) -> None:
        for name in ("idle_timeout_s", "header_timeout_s", "body_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"DISPATCH_{name.upper()}: must be positive")
        if self.max_connections < 1:
            raise ValueError("DISPATCH_MAX_CONNECTIONS: must be at least 1")


def connection_cap(configured: int, reserved: int = 0) -> int:
    """`configured`, lowered so that the open connections plus `reserved` (and a fixed
    margin) fit within the soft descriptor limit; never below a quarter of that limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    room = max(soft - reserved - _RESERVED_DESCRIPTORS, soft // 4, 1)
    return min(configured, room)


class BodyTimeout(web.HTTPRequestTimeout):
    """The request body did not arrive within the body timeout (answered 408)."""


@asynccontextmanager
async def body_deadline(request: web.Request) -> AsyncIterator[None]:
    """Bound the body reads inside to the app's BODY_TIMEOUT_S; raises `BodyTimeout` after it.

    aiohttp closes the connection after the answer: it never reuses one whose body was
    not read to its end (it reads on for at most its lingering time, 10 s)."""
    seconds = request.app.get(BODY_TIMEOUT_S, _DEFAULT_BODY_TIMEOUT_S)
    deadline = asyncio.timeout(seconds)
    try:
        async with deadline:
            yield
    except TimeoutError:
        if not deadline.expired():
            raise
        raise BodyTimeout(text=f"the request body did not arrive within {seconds:g} s") from None


async def drop_unread_body(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """An `on_response_prepare` hook: an error answered while the client is still sending the
    request body (a refusal at admission, or for its declared size) ends the connection, and
    the rest of the body is dropped as it arrives instead of being parsed.

    aiohttp reads such a body to its end through the HTTP parser before it reuses the
    connection (its lingering close, up to 10 s): with one key's 7 MB uploads refused about
    22 times a second, that parser was 14 % of the bridge's samples (3 % with this). The
    connection still reads on until the client closes it, so the answer arrives however the
    client sends: closing with the body unread would reset the connection and lose it."""
    if response.status < 400 or request.content.is_eof():
        return
    transport = request.transport
    protocol = transport.get_protocol() if transport is not None else None
    if isinstance(protocol, _Guarded):
        # aiohttp has made the head by now (3.14 runs this hook after): the header is set
        # here, and force_close() ends the connection after the answer.
        response.headers[hdrs.CONNECTION] = "close"
        response.force_close()
        protocol.drop_incoming()


class _Every:
    """Lets one log line through per `interval_s`, counting what it held back."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval_s
        self._clock = clock
        self._next = 0.0
        self.held = 0

    def due(self) -> bool:
        now = self._clock()
        if now < self._next:
            self.held += 1
            return False
        self._next = now + self._interval
        return True

    def take_held(self) -> int:
        held, self.held = self.held, 0
        return held


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, interval_s: float = 10.0) -> None:
    """Log accept() failures for want of descriptors once per `interval_s`, with a count,
    and without a traceback; every other loop error goes to the handler installed before."""
    previous = loop.get_exception_handler()
    gate = _Every(interval_s)

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if (
            isinstance(exc, OSError)
            and exc.errno in _EXHAUSTED
            and "accept" in str(context.get("message", ""))
        ):
            if gate.due():
                _log.error(
                    "accept() failed: %s (%d more since the last report); refusing new"
                    " connections until descriptors free up",
                    exc.strerror,
                    gate.take_held(),
                )
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)


def _refusal(status: int, reason: str, code: str, detail: str) -> bytes:
    body = orjson.dumps(
        {
            "type": f"https://dispatch-bridge.dev/problems/{code}",
            "title": reason,
            "status": status,
            "detail": detail,
            "code": code,
        }
    )
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/problem+json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    )
    if status == 503:
        head += "Retry-After: 1\r\n"
    return head.encode() + b"\r\n" + body


_OVER_CAP = _refusal(
    503,
    "Service Unavailable",
    "too_many_connections",
    "this server holds as many connections as it may; retry shortly or reuse a connection",
)
_HEAD_TOO_SLOW = _refusal(
    408, "Request Timeout", "request_timeout", "the request head did not arrive in time"
)
_BROKEN_FRAMING = _refusal(
    400, "Bad Request", "malformed_body", "the request body's framing is broken (bad chunk)"
)


class _Guard:
    """The per-listener state: open and lingering connections, the limits, the log gate."""

    def __init__(self, settings: ServerSettings, cap: int) -> None:
        self.settings = settings
        self.cap = cap
        self.open = 0
        self.lingering = 0
        self.refusals = _Every(10.0)


class _Guarded(ExactReads):
    """One connection: aiohttp's protocol inside, with the cap and the head deadline; its
    reads are exactly what arrived (_reads.py)."""

    def __init__(self, inner: asyncio.Protocol, guard: _Guard) -> None:
        self._inner = inner
        self._guard = guard
        self._transport: asyncio.Transport | None = None
        self._admitted = False
        self._deadline: asyncio.TimerHandle | None = None
        self._tail = b""  # the last bytes seen while waiting for the end of the first head
        self._received = False
        self._dropping = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        guard = self._guard
        loop = asyncio.get_running_loop()
        if guard.open >= guard.cap:
            if guard.refusals.due():
                _log.warning(
                    "refusing connections: %d open, the cap (%d more refused since the"
                    " last report)",
                    guard.open,
                    guard.refusals.take_held(),
                )
            if guard.lingering >= _MAX_LINGERING:
                transport.abort()
                return
            # Answer, then half-close and let the client read it: closing with its request
            # unread would reset the connection and lose the answer.
            guard.lingering += 1
            transport.write(_OVER_CAP)
            if transport.can_write_eof():
                transport.write_eof()
            self._deadline = loop.call_later(_REFUSAL_LINGER_S, transport.abort)
            return
        guard.open += 1
        self._admitted = True
        self._deadline = loop.call_later(guard.settings.header_timeout_s, self._head_too_slow)
        self._inner.connection_made(transport)

    def _head_too_slow(self) -> None:
        self._deadline = None
        if self._transport is None or self._transport.is_closing():
            return
        if self._received:  # a head begun: say why it ends; an unused connection just closes
            self._transport.write(_HEAD_TOO_SLOW)
        self._transport.close()

    def drop_incoming(self) -> None:
        """From now on, what the client sends is dropped unread (see `drop_unread_body`);
        the connection ends when the client closes it or aiohttp's lingering time ends."""
        self._dropping = True

    def data_received(self, data: bytes) -> None:
        if not self._admitted or self._dropping:
            return  # a refused connection's request, or a refused body, is never read
        if self._deadline is not None:
            self._received = True
            seen = self._tail + data
            # Bare LF line ends too: stopping the clock late is harmless, early is not.
            if b"\r\n\r\n" in seen or b"\n\n" in seen:
                self._deadline.cancel()
                self._deadline = None
                self._tail = b""
            else:
                self._tail = seen[-3:]
        self._inner.data_received(data)
        if self._transport is not None and _body_framing_broken(self._inner):
            self._transport.write(_BROKEN_FRAMING)
            self._transport.close()  # wakes the stuck handler with a reset (logged as 499)

    def eof_received(self) -> bool | None:
        if not self._admitted:
            return None
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        if self._admitted:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._admitted:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._transport = None
        if self._admitted:
            self._guard.open -= 1
            self._inner.connection_lost(exc)
        else:
            self._guard.lingering = max(0, self._guard.lingering - 1)


def _body_framing_broken(inner: asyncio.Protocol) -> bool:
    """True when aiohttp's C parser failed inside the body of the request being handled.

    That parser (llhttp, aiohttp 3.14) drops the request's payload on a framing error such as
    a chunk size that is not hex, and queues a 400 for *after* the handler: the handler waits
    on a body that never ends, until the body timeout. (The pure-Python parser sets the error
    on the payload instead.) The private names are read defensively: when they change, this
    is False and the body timeout still bounds the wait; tests/telemetry keeps it honest."""
    request = getattr(inner, "_current_request", None)
    messages = getattr(inner, "_messages", None)
    if request is None or not messages or request.content.is_eof():
        return False
    error = messages[-1][0]
    return getattr(error, "status", None) == 400 and getattr(error, "exc", None) is not None


class GuardedSite(web.BaseSite):
    """A TCP listener for `runner` (like `web.TCPSite`) with the limits of `settings`; the
    runner must be set up with `keepalive_timeout=settings.idle_timeout_s`."""

    __slots__ = ("_guard", "_host", "_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        settings: ServerSettings,
        *,
        reserved_descriptors: int = 0,
        backlog: int = 128,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        cap = connection_cap(settings.max_connections, reserved_descriptors)
        if cap < settings.max_connections:
            _log.warning(
                "DISPATCH_MAX_CONNECTIONS lowered from %d to %d to fit the descriptor limit",
                settings.max_connections,
                cap,
            )
        self._guard = _Guard(settings, cap)

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    @property
    def open_connections(self) -> int:
        return self._guard.open

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        guard = self._guard

        def factory() -> asyncio.BaseProtocol:
            return _Guarded(server(), guard)

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            factory, self._host, self._port, backlog=self._backlog, reuse_address=True
        )
