"""Socket reads of exactly what arrived: no fresh 256 KiB buffer per small message.

asyncio's selector transport receives with `sock.recv(256 KiB)`: every read allocates a
fresh 256 KiB buffer and cuts it down to what arrived (a request head, a ticket: a few
hundred bytes). glibc serves a block above its mmap threshold (128 KiB, fixed by the
image's MALLOC_MMAP_THRESHOLD_, and glibc's starting default) with a fresh mapping, so each
read cost mmap, mremap and munmap and a page fault on fresh zeroed memory
(python/cpython#85451): measured, 40-50 µs of system time per call in each service, more
than a quarter of the bridge's CPU per call. Reading less at a time (the transport's
`max_size`) puts those buffers on the heap instead, where cutting each down leaves holes
that the soak saw RSS grow into (+9 % bridge, +18 % dispatch-api in ten minutes).

A `BufferedProtocol` is read the other way: the transport receives into a buffer the
protocol lends (`recv_into`) and the protocol copies out what arrived, one allocation of
exactly that size (uvloop reads every socket so). `ExactReads` does that for a protocol
whose `data_received` stays as it is. The listeners' protocol (`_server._Guarded`) and the
bridge's connections to dispatch-api (`exact_read_connector`) read so, and so do
dispatch-api's connections to PostgreSQL: asyncpg builds its protocol inside, so
`read_exactly` puts a relay that reads this way in front of it once the connection is open
(the answer to a ticket read is one read, and it had cost a mapping of its own).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from typing import TYPE_CHECKING, Any, cast

import aiohttp
from aiohttp.client_proto import ResponseHandler

#: The most one read takes, as asyncio's own reads: a large body arrives in as few steps.
READ_BYTES = 256 * 1024

# One buffer per thread, lent to every read on it: a loop reads its sockets one at a time
# and copies out before the next, but recv_into lets go of the GIL, so a loop on another
# thread must not receive into the same memory meanwhile.
_buffers = threading.local()


def _buffer() -> memoryview:
    view: memoryview | None = getattr(_buffers, "view", None)
    if view is None:
        view = _buffers.view = memoryview(bytearray(READ_BYTES))
    return view


class ExactReads(asyncio.BufferedProtocol):
    """Reads into the thread's buffer, handed on to `data_received` as bytes of exactly
    the size that arrived. Subclass it for a protocol of your own (which then defines
    `data_received`, `eof_received` and the rest), or list it after an existing Protocol
    class among the bases, so that BufferedProtocol's own `eof_received` does not stand in
    for that protocol's."""

    def get_buffer(self, sizehint: int) -> memoryview:
        return _buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(_buffer()[:nbytes].tobytes())

    if TYPE_CHECKING:  # the Protocol this is mixed into has it

        def data_received(self, data: bytes) -> None: ...


class _ExactResponseHandler(ResponseHandler, ExactReads):
    """aiohttp's client protocol, reading exactly what arrived. ExactReads comes second:
    its base class, BufferedProtocol, has an `eof_received` of its own that would otherwise
    stand in for aiohttp's."""


class _Relay(ExactReads):
    """Reads exactly what arrived for a protocol that is already connected, and hands on
    everything the transport tells it."""

    def __init__(self, inner: asyncio.BaseProtocol) -> None:
        self._inner = inner

    def data_received(self, data: bytes) -> None:
        cast("asyncio.Protocol", self._inner).data_received(data)

    def eof_received(self) -> bool | None:
        # asyncpg's protocol has none: None, as asyncio.Protocol's own, closes the transport.
        eof = getattr(self._inner, "eof_received", None)
        return None if eof is None else cast("bool | None", eof())

    def connection_lost(self, exc: Exception | None) -> None:
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


def read_exactly(transport: asyncio.BaseTransport) -> None:
    """Make an open plain socket connection read exactly what arrived, for the protocol it
    has. A connection in TLS is left as it is: asyncio's TLS layer already reads into a
    buffer it keeps. So is one whose protocol lends its own buffer."""
    protocol = transport.get_protocol()
    if isinstance(protocol, asyncio.BufferedProtocol):
        return
    if transport.get_extra_info("sslcontext") is not None:
        return
    transport.set_protocol(_Relay(protocol))


def exact_read_connector(**options: Any) -> aiohttp.TCPConnector:
    """An aiohttp TCPConnector (`options` as its own) whose connections read exactly what
    arrived. It replaces the connector's protocol factory, which aiohttp keeps private;
    should that attribute go, connections read as aiohttp's own and nothing else changes
    (tests/dispatch_bridge/test_socket_reads.py notices)."""
    connector = aiohttp.TCPConnector(**options)
    if hasattr(connector, "_factory"):
        exact = functools.partial(_ExactResponseHandler, loop=connector._loop)
        connector._factory = cast("functools.partial[ResponseHandler]", exact)
    return connector
