"""Socket reads sized for the heap: what a small message costs to receive.

asyncio's selector transport receives with `sock.recv(max_size)`, a class attribute of 256
KiB: every read allocates a fresh 256 KiB buffer and cuts it down to what arrived (a
request head, a ticket: a few hundred bytes). glibc serves a block above its mmap threshold
(128 KiB, fixed by the image's MALLOC_MMAP_THRESHOLD_, and glibc's starting default) with
a fresh mapping, so every read cost mmap, mremap and munmap, and a page fault on fresh
zeroed memory (python/cpython#85451). A hop reads twice per call (the request, the answer
from downstream); dispatch-api twice more (the request, PostgreSQL's answer). Measured on
both services under load: 40-50 µs of system time per call, more than a quarter of the
bridge's CPU per call, and the same share of every Python hop's.

Reads of at most `READ_BYTES` come from the heap instead: no system call, no fresh page.
A large body arrives in more reads of this size, each still one step of the loop.
"""

from __future__ import annotations

import asyncio.selector_events

#: Below the mmap threshold with room to spare; a loopback segment is at most 64 KiB.
READ_BYTES = 64 * 1024


def size_socket_reads(size: int = READ_BYTES) -> None:
    """Make every selector socket transport of this process read at most `size` bytes at a
    time, including those already open. Call once per process, before serving. The class
    attribute is undocumented yet public (CPython has not renamed it since 3.4); were it
    gone, reads would keep their default size."""
    transport = getattr(asyncio.selector_events, "_SelectorSocketTransport", None)
    if transport is not None and hasattr(transport, "max_size"):
        transport.max_size = size
