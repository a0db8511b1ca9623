"""A small asyncio TCP proxy for fault injection between two real components.

It forwards bytes both ways (to a TCP address or a Unix socket, so it also fits between
dispatch-api and the embedded PostgreSQL) and can, on demand:

- `drop_responses = n`: lose the next n answers after the upstream sent them (so it
  committed, but the client never hears it);
- `reset_requests = n`: cut the next n requests before they reach the upstream (lost on
  the way: nothing was applied);
- `delay_s = s`: hold every answer back s seconds (slow upstream);
- `blackhole = True`: swallow requests and never answer (connections hang);
- `hold()` / `release()`: keep answers back until released; `holding` is set once one is;
- `hold_large(n)` / `release_large()`: the same, only for answers to requests whose
  Content-Length is at least n bytes (one caller's heavy uploads slow, the rest not);
  `large_held` counts the answers held now;
- `cut()`: abort every open connection at once, as a crashed peer would;
- `refuse()` / `listen_again()`: stop listening (new connections are refused: provably
  nothing reaches the upstream) and cut open connections; then listen on the same port;
- `random_faults(rate, rng)`: each request, with probability `rate`, gets one of the
  faults above (drop, reset or a delay), for history checks and soaks.

`requests` counts the HTTP requests forwarded; `faults` counts what was injected;
`peak_connections` is the most client connections open at once.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

_METHODS = (b"GET", b"POST", b"PATCH", b"PUT", b"DELETE")


class FaultProxy:
    def __init__(
        self, upstream_host: str = "", upstream_port: int = 0, *, unix_path: str | None = None
    ) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._unix_path = unix_path
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.requests = 0
        self.connections = 0
        self.peak_connections = 0
        self.drop_responses = 0
        self.reset_requests = 0
        self.delay_s = 0.0
        self.blackhole = False
        self.faults: Counter[str] = Counter()
        self._fault_rate = 0.0
        self._rng = random.Random(0)
        self._pending_delays = 0
        self._refusing = 0
        #: How long a randomly delayed answer is held back.
        self.random_delay_s = 0.5
        self.released = asyncio.Event()
        self.released.set()
        self.holding = asyncio.Event()
        self.large_bytes = 0
        self.large_released = asyncio.Event()
        self.large_released.set()
        self.large_held = 0

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)

    def refuse(self) -> None:
        """Stop listening, so connecting is refused, and cut every open connection."""
        assert self._server is not None
        self._refusing = self.port
        self._server.close()
        self.cut()

    async def listen_again(self) -> None:
        """Listen again, on the port `refuse()` closed."""
        await self.start(self._refusing)

    async def close(self) -> None:
        """Stop listening and cut every open connection, as a crashed peer would."""
        if self._server is not None:
            self._server.close()
        self.cut()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if self._server is not None:
            await self._server.wait_closed()

    def cut(self) -> None:
        """Abort every open connection (both sides); new ones are still accepted."""
        for writer in list(self._writers):
            writer.transport.abort()

    def hold(self) -> None:
        """Keep responses back until `release()`; `holding` is set once one is held."""
        self.holding.clear()
        self.released.clear()

    def release(self) -> None:
        self.released.set()

    def hold_large(self, min_bytes: int) -> None:
        """Keep back answers to requests of at least `min_bytes` until `release_large()`."""
        self.large_bytes = min_bytes
        self.large_released.clear()

    def release_large(self) -> None:
        self.large_bytes = 0
        self.large_released.set()

    def random_faults(self, rate: float, rng: random.Random | None = None) -> None:
        """From now on, each request gets a random fault with probability `rate`."""
        self._fault_rate = rate
        self._rng = rng or random.Random(0)

    async def _connect_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._unix_path is not None:
            return await asyncio.open_unix_connection(self._unix_path)
        return await asyncio.open_connection(*self._upstream)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        self.peak_connections = max(self.peak_connections, self.connections)
        try:
            up_reader, up_writer = await self._connect_upstream()
        except OSError:
            writer.transport.abort()
            self._writers.discard(writer)
            self._tasks.discard(task)
            self.connections -= 1
            return
        self._writers.add(up_writer)
        large = [False]  # whether the request now answered on this connection is large
        try:
            await asyncio.gather(
                self._requests(reader, up_writer, writer, large),
                self._responses(up_reader, writer, large),
            )
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, up_writer):
                w.transport.abort()
                self._writers.discard(w)
            self._tasks.discard(task)
            self.connections -= 1

    def _draw_fault(self) -> None:
        if self._fault_rate <= 0 or self._rng.random() >= self._fault_rate:
            return
        fault = self._rng.choice(("drop", "reset", "delay"))
        if fault == "drop":
            self.drop_responses += 1
        elif fault == "reset":
            self.reset_requests += 1
        else:
            self._pending_delays += 1

    async def _requests(
        self,
        reader: asyncio.StreamReader,
        up: asyncio.StreamWriter,
        client: asyncio.StreamWriter,
        large: list[bool],
    ) -> None:
        while data := await reader.read(65536):
            if self.blackhole:
                self.faults["blackholed"] += 1
                continue  # read and forget: the caller waits for an answer that never comes
            if data[:8].split(b" ")[0] in _METHODS:
                self._draw_fault()
                if self.reset_requests > 0:
                    self.reset_requests -= 1
                    self.faults["reset"] += 1
                    client.transport.abort()  # lost before arrival: upstream never sees it
                    up.transport.abort()
                    return
                self.requests += 1
                large[0] = 0 < self.large_bytes <= _content_length(data)
            up.write(data)
            await up.drain()
        up.close()

    async def _responses(
        self, up: asyncio.StreamReader, writer: asyncio.StreamWriter, large: list[bool]
    ) -> None:
        while data := await up.read(65536):
            if large[0]:
                large[0] = False
                self.large_held += 1
                try:
                    await self.large_released.wait()
                finally:
                    self.large_held -= 1
            if not self.released.is_set():
                self.holding.set()
                await self.released.wait()
            delay = self.delay_s
            if self._pending_delays > 0:
                self._pending_delays -= 1
                self.faults["delay"] += 1
                delay = max(delay, self.random_delay_s)
            if delay > 0:
                await asyncio.sleep(delay)
            if self.drop_responses > 0:
                self.drop_responses -= 1
                self.faults["drop"] += 1
                writer.transport.abort()  # the answer is lost after the upstream committed
                return
            writer.write(data)
            await writer.drain()
        writer.close()


def _content_length(head: bytes) -> int:
    """The Content-Length of the request whose head starts `head` (0 when absent)."""
    for line in head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return int(value)
    return 0
