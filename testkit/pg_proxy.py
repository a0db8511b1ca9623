"""A FaultProxy between dispatch-api and PostgreSQL, for fault 6 (connections lost mid-load).

`server_proxy` builds a proxy to where the server listens (the embedded server's Unix
socket, or host:port); `through` rewrites a database URL to reach it via the proxy, so
`proxy.cut()` severs every connection of the pool at once.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit, urlunsplit

from .fault_proxy import FaultProxy


def server_proxy(server_url: str) -> FaultProxy:
    """A (not yet started) proxy to the server of `server_url`."""
    parts = urlsplit(server_url)
    query = parse_qs(parts.query)
    port = int(query.get("port", [str(parts.port or 5432)])[0])
    host = query.get("host", [parts.hostname or "127.0.0.1"])[0]
    if host.startswith("/"):  # a socket directory, as libpq reads it
        return FaultProxy(unix_path=f"{host}/.s.PGSQL.{port}")
    return FaultProxy(host, port)


def through(proxy: FaultProxy, database_url: str) -> str:
    """`database_url`, reached over TCP via the started `proxy` instead."""
    parts = urlsplit(database_url)
    credentials = parts.username or ""
    if parts.password:
        credentials += f":{parts.password}"
    netloc = f"127.0.0.1:{proxy.port}"
    if credentials:
        netloc = f"{credentials}@{netloc}"
    # Over the proxy to a Unix socket, the server cannot offer TLS: do not ask for it.
    return urlunsplit(parts._replace(netloc=netloc, query="sslmode=disable"))
