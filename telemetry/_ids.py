"""Ids that travel with a request: validation of incoming ones, minting of new ones."""

from __future__ import annotations

import os
import re

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


def new_id() -> str:
    """A random UUID (version 4) as its canonical string. Formatted by hand: uuid.uuid4()
    builds an int and a UUID object to print it, twice the cost, on every call of the hop."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 9562 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
