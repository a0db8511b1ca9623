"""A small asyncio TCP proxy for fault injection between two real components.

It forwards bytes both ways and can, on demand: drop the next response (the upstream has
answered, so it committed, but the client never hears it), hold responses until released,
and count the requests it forwarded.
"""

from __future__ import annotations

import asyncio


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.requests = 0
        self.drop_responses = 0
        self.released = asyncio.Event()
        self.released.set()
        self.holding = asyncio.Event()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def close(self) -> None:
        """Stop listening and cut every open connection, as a crashed peer would."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if self._server is not None:
            await self._server.wait_closed()

    def hold(self) -> None:
        """Keep responses back until `release()`; `holding` is set once one is held."""
        self.holding.clear()
        self.released.clear()

    def release(self) -> None:
        self.released.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.transport.abort()
            self._writers.discard(writer)
            self._tasks.discard(task)
            return
        self._writers.add(up_writer)
        try:
            await asyncio.gather(
                self._requests(reader, up_writer), self._responses(up_reader, writer)
            )
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, up_writer):
                w.transport.abort()
                self._writers.discard(w)
            self._tasks.discard(task)

    async def _requests(self, reader: asyncio.StreamReader, up: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if data[:8].split(b" ")[0] in (b"GET", b"POST", b"PATCH", b"PUT", b"DELETE"):
                self.requests += 1
            up.write(data)
            await up.drain()
        up.close()

    async def _responses(self, up: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await up.read(65536):
            if not self.released.is_set():
                self.holding.set()
                await self.released.wait()
            if self.drop_responses > 0:
                self.drop_responses -= 1
                writer.transport.abort()  # the answer is lost after the upstream committed
                return
            writer.write(data)
            await writer.drain()
        writer.close()
