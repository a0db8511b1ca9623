"""Ids that travel with a request: validation of incoming ones, minting of new ones."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

#: Correlation and request ids: bounded, and nothing that could forge a log line or header.
SAFE_ID = re.compile(r"[A-Za-z0-9._:@+=-]{1,128}")


class UnsafeId(ValueError):
    """A header carried an id outside SAFE_ID; `header` names it."""

    def __init__(self, header: str) -> None:
        self.header = header
        super().__init__(f"{header} must be 1-128 characters of letters, digits and ._:@+=-")


def incoming_id(value: str | None, header: str) -> str | None:
    """The header's id when safe, None when absent; UnsafeId otherwise."""
    if value is None:
        return None
    if not SAFE_ID.fullmatch(value):
        raise UnsafeId(header)
    return value


#: Random bytes read from the OS at once: one getrandom() call per this many ids / 16
#: instead of one per id (each call of the hop mints two ids).
_BATCH_BYTES = 16 * 256


class _Randomness:
    """os.urandom, read a batch at a time and handed out 16 bytes at a time by a list
    iterator (whose next() is one step under the GIL: no two threads get the same bytes);
    emptied in a forked child, so a child never hands out the ids its parent will."""

    def __init__(self) -> None:
        self._chunks: Iterator[bytes] = iter(())

    def take16(self) -> bytes:
        while (chunk := next(self._chunks, None)) is None:
            batch = os.urandom(_BATCH_BYTES)
            self._chunks = iter([batch[i : i + 16] for i in range(0, _BATCH_BYTES, 16)])
        return chunk

    def forget(self) -> None:
        self._chunks = iter(())


_RANDOM = _Randomness()
os.register_at_fork(after_in_child=_RANDOM.forget)


def new_id() -> str:
    """A random UUID (version 4) as its canonical string. Formatted by hand: uuid.uuid4()
    builds an int and a UUID object to print it, twice the cost, on every call of the hop."""
    raw = bytearray(_RANDOM.take16())
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 9562 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
