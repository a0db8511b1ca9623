"""`dispatch-bridge up`: both services in one process on embedded PostgreSQL, for development.

Order matters to a second or failed `up`: settings are checked and both ports found free
before anything is started or written; `dev-credentials.json` is written, and the banner
printed, only once both services listen, so the file always describes a running instance.
"""

from __future__ import annotations

import argparse
import errno
import socket
import sys
from dataclasses import replace
from hashlib import sha256
from pathlib import Path

from bridge import create_bridge_app
from bridge import start_draining as start_draining_bridge
from dispatch_api.web import create_app
from dispatch_api.web import start_draining as start_draining_api
from settings import Secret
from telemetry import JsonLog

from ._config import Config
from ._database import embedded_database, prepare
from ._devcreds import (
    FILE_NAME,
    DevCredentials,
    dev_credentials,
    register_dev_principals,
    register_dev_technicians,
    write_dev_credentials,
)
from ._errors import CommandError
from ._serve import observability, serve

#: The agent `up` adds, allowed every tool; agents of DISPATCH_AGENT_KEYS / [[agents]] too.
DEV_AGENT = "dev-agent"


async def up_command(config: Config, args: argparse.Namespace) -> int:
    settings = config.api
    creds = dev_credentials(settings)
    if not settings.bridge_url:
        # The console's tool page reads this bridge's /metrics when no Prometheus is set.
        settings = replace(settings, bridge_url=creds.bridge_url)
    bridge = config.bridge(
        port=settings.bridge_port,
        api_url=creds.api_url,
        gateway_token=Secret(creds.gateway_token),
    )
    dev_agent = f"{DEV_AGENT}:supervisor:{sha256(creds.agent_key.encode()).hexdigest()}"
    bridge = replace(bridge, agent_keys=(*bridge.agent_keys, dev_agent))
    ensure_free(settings.api_host, settings.api_port, "DISPATCH_API_PORT")
    ensure_free(bridge.host, bridge.port, "DISPATCH_BRIDGE_PORT")
    observability("dispatch-bridge", config, database=True)
    url = settings.database_url
    dsn = url.reveal() if url is not None else embedded_database(settings)
    await prepare(settings, dsn)
    await register_dev_principals(creds, dsn)
    await register_dev_technicians(dsn)
    path = settings.data_dir / FILE_NAME
    level = config.logging.level

    def listening() -> None:
        write_dev_credentials(creds, path)
        _print_banner(creds, path)

    await serve(
        [
            (
                create_app(settings, dsn, log=JsonLog("dispatch-api", level=level)),
                settings.api_host,
                settings.api_port,
                start_draining_api,
            ),
            (
                create_bridge_app(bridge, log=JsonLog("bridge", level=level)),
                bridge.host,
                bridge.port,
                start_draining_bridge,
            ),
        ],
        drain_timeout_s=bridge.drain_timeout_s,
        drain_delay_s=bridge.drain_delay_s,
        limits=config.server,
        reserved_descriptors=settings.db_pool_max + bridge.api_max_connections,
        listening=listening,
    )
    return 0


def ensure_free(host: str, port: int, variable: str) -> None:
    """CommandError when something already listens on host:port (another `up`, most often)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # As the server will bind: a port whose old connections linger in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise CommandError(
                f"up: port {port} on {host} is already in use (is `dispatch-bridge up` running"
                f" already?); stop it, or choose another port with {variable}"
            ) from None


def _print_banner(creds: DevCredentials, path: Path) -> None:
    # On stderr: stdout carries the services' JSON log lines only.
    print(
        f"dispatch-api  {creds.api_url}   (token with the supervisor role: {creds.api_token})\n"
        f"bridge        {creds.bridge_url}   (agent key, every tool: {creds.agent_key})\n"
        f"console       {creds.api_url}/console/   (sign in with the supervisor token)\n"
        f"credentials   {path}\n"
        "Ctrl-C stops.",
        file=sys.stderr,
        flush=True,
    )
