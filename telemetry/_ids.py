"""Ids that travel with a request: validation of incoming ones, minting of new ones."""

from __future__ import annotations

import re
import uuid

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
    return str(uuid.uuid4())
