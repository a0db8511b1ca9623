"""Which browser origins may call /mcp: the DNS-rebinding guard's allow-list.

A rebinding page runs at an origin its attacker names (`http://evil.example:8080`) and, once
the name resolves to this host, sends that same name as `Host`; comparing `Origin` with `Host`
therefore proves nothing. The guard compares `Origin` with a configured list instead.

Entries are origins, `scheme://host[:port]`; the port `*` matches any port. The default list
is the loopback names on any port: an attacker cannot make a browser send a loopback origin
without already running a page on this machine, and local browser-based MCP tools (inspectors,
dev UIs on `localhost:5173`) keep working. Clients that are not browsers send no `Origin` and
are not affected.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_ALLOWED_ORIGINS = ("http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class OriginError(ValueError):
    """An allow-list entry that is not an origin."""


@dataclass(frozen=True, slots=True)
class _Entry:
    scheme: str
    host: str
    port: int | None  # None: any port


def _parse(origin: str, *, wildcard: bool) -> _Entry:
    any_port = wildcard and origin.endswith(":*")
    text = origin[:-2] if any_port else origin
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise OriginError(f"{origin!r} is not an origin") from None
    if (
        parts.scheme not in _DEFAULT_PORTS
        or not parts.hostname
        or parts.path
        or parts.query
        or parts.fragment
        or parts.username is not None
        or (any_port and port is not None)
    ):
        raise OriginError(f"{origin!r} is not an origin: expected scheme://host[:port]")
    if any_port:
        return _Entry(parts.scheme, parts.hostname, None)
    return _Entry(parts.scheme, parts.hostname, port or _DEFAULT_PORTS[parts.scheme])


class OriginPolicy:
    """`allows(origin)`: True for an origin on the list (or no Origin header at all)."""

    def __init__(self, allowed: tuple[str, ...]) -> None:
        """Raises OriginError for an entry that is not `scheme://host[:port|:*]`."""
        self._entries = tuple(_parse(o, wildcard=True) for o in allowed)

    def allows(self, origin: str | None) -> bool:
        if origin is None:
            return True
        try:
            seen = _parse(origin, wildcard=False)
        except OriginError:
            return False  # "null" (sandboxed frames, file: pages) and garbage
        return any(
            e.scheme == seen.scheme and e.host == seen.host and e.port in (None, seen.port)
            for e in self._entries
        )
