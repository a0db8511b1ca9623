"""Development credentials for `dispatch-bridge up`, kept in `$DISPATCH_DATA_DIR`.

Tokens are created once and reused on later starts, so a walkthrough keeps working. The file
is written only once both services listen (`write_dev_credentials`): an `up` that fails — a
port taken by an instance already running, a bad setting — leaves that instance's file alone.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from dispatch_api.domain import Role, Technician
from dispatch_api.settings import ApiSettings
from dispatch_api.store import connect, principals, technicians, templates

FILE_NAME = "dev-credentials.json"
#: The technicians `up` seeds (the walkthroughs schedule tech-dev-1, which has a principal).
DEV_TECHNICIANS = (("tech-dev-1", "Dev Technician One"), ("tech-dev-2", "Dev Technician Two"))


@dataclass(frozen=True, slots=True)
class DevCredentials:
    api_url: str
    bridge_url: str
    #: An agent key allowed every tool (used by the bridge).
    agent_key: str
    #: A dispatch-api token with the supervisor role.
    api_token: str
    dispatcher_token: str
    technician_id: str
    technician_token: str
    #: The bridge's own dispatch-api token: a trusted gateway.
    gateway_token: str


def dev_credentials(settings: ApiSettings) -> DevCredentials:
    """The credentials of this data dir: those of the file when there is one, else new ones."""
    previous = _read(settings.data_dir / FILE_NAME)
    return DevCredentials(
        api_url=f"http://{settings.api_host}:{settings.api_port}",
        bridge_url=f"http://{settings.api_host}:{settings.bridge_port}",
        agent_key=previous.get("agent_key") or principals.new_token("agt"),
        api_token=previous.get("api_token") or principals.new_token(),
        dispatcher_token=previous.get("dispatcher_token") or principals.new_token(),
        technician_id="tech-dev-1",
        technician_token=previous.get("technician_token") or principals.new_token(),
        gateway_token=previous.get("gateway_token") or principals.new_token(),
    )


async def register_dev_principals(creds: DevCredentials, dsn: str) -> None:
    """Create (or re-key) the principals whose tokens `creds` holds."""
    conn = await connect(dsn)
    try:
        await principals.upsert(conn, "dev-supervisor", Role.SUPERVISOR, creds.api_token)
        await principals.upsert(conn, "dev-dispatcher", Role.DISPATCHER, creds.dispatcher_token)
        await principals.upsert(conn, creds.technician_id, Role.TECHNICIAN, creds.technician_token)
        await principals.upsert(
            conn, "dev-bridge", Role.GATEWAY, creds.gateway_token, trusted_gateway=True
        )
    finally:
        await conn.close()


async def register_dev_technicians(dsn: str) -> None:
    """Seed DEV_TECHNICIANS, active and skilled for every incident template in the database,
    unless they exist: a later `up` leaves them (and an operator's changes) alone."""
    conn = await connect(dsn)
    try:
        skills = tuple(await templates.load(conn))
        await technicians.ensure(
            conn, [Technician(tid, name, skills) for tid, name in DEV_TECHNICIANS]
        )
    finally:
        await conn.close()


def write_dev_credentials(creds: DevCredentials, path: Path) -> None:
    """The file, readable by its owner only, replaced whole: a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(orjson.dumps(asdict(creds), option=orjson.OPT_INDENT_2) + b"\n")
    os.replace(partial, path)


def _read(path: Path) -> dict[str, str]:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}
