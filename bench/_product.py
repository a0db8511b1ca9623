"""The product under test, as in production: dispatch-api and the bridge as two processes
(`serve-api`, `serve-bridge`) on an embedded PostgreSQL this module starts and prepares,
plus the minimal forwarding proxies S2 compares against (bare and observed)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from hashlib import sha256
from pathlib import Path

import aiohttp
import psutil

from dispatch_api.domain import Role
from dispatch_api.store import connect, migrate, principals, start_embedded, templates
from testkit.api import ensure_technicians
from testkit.image import ALLOCATOR_ENV, without_allocator_env
from testkit.processes import free_port


def _digest(key: str) -> str:
    return sha256(key.encode()).hexdigest()


class Product:
    """Start with `async with Product(env) as p:`; `p.urls`, `p.secrets`, `p.dsn`, and
    `p.process(name)` (psutil handles for "api", "bridge", "proxy", "postgres", and with
    `observed_proxy` "observed_proxy") for CPU.
    The services get the image's allocator settings unless `allocator` says otherwise.
    `observed_proxy`: also start S2's second floor (only the harness's main product needs
    it; every process more slows the start of the products a scenario runs side by side)."""

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        allocator: Mapping[str, str] = ALLOCATOR_ENV,
        *,
        observed_proxy: bool = False,
    ) -> None:
        self.observed_proxy = observed_proxy
        self.folder = Path(tempfile.mkdtemp(prefix="dispatch-bench-"))
        self.extra_env = dict(env or {})
        self.allocator = dict(allocator)
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.urls: dict[str, str] = {}
        self.secrets: dict[str, str] = {}
        self.dsn = ""

    async def __aenter__(self) -> Product:
        self.dsn = start_embedded(self.folder / "pg", delete_on_exit=True)
        api_token, gateway_token, agent_key = (principals.new_token() for _ in range(3))
        conn = await connect(self.dsn)
        try:
            await migrate(conn)
            await templates.seed(conn, templates.read_template_file(None))
            await principals.upsert(conn, "bench", Role.SUPERVISOR, api_token)
            await principals.upsert(
                conn, "bridge", Role.GATEWAY, gateway_token, trusted_gateway=True
            )
        finally:
            await conn.close()
        # The technicians `up` seeds: the soak's agents book tech-dev-1, as the walkthroughs do.
        await ensure_technicians(self.dsn, "tech-dev-1", "tech-dev-2")
        api_port, bridge_port, proxy_port = free_port(), free_port(), free_port()
        observed_port = free_port()
        # A caller may fix dispatch-api's port (the soak puts a fault proxy in front of it).
        api_port = int(self.extra_env.get("DISPATCH_API_PORT", api_port))
        self.urls = {
            "api": f"http://127.0.0.1:{api_port}",
            "bridge": f"http://127.0.0.1:{bridge_port}",
            "proxy": f"http://127.0.0.1:{proxy_port}",
        }
        if self.observed_proxy:
            self.urls["observed_proxy"] = f"http://127.0.0.1:{observed_port}"
        self.secrets = {
            "api_token": api_token,
            "gateway_token": gateway_token,
            "agent_key": agent_key,
        }
        env = {
            **without_allocator_env(),
            **self.allocator,
            "DISPATCH_DATABASE_URL": self.dsn,
            "DISPATCH_API_PORT": str(api_port),
            "DISPATCH_BRIDGE_PORT": str(bridge_port),
            "DISPATCH_API_URL": self.urls["api"],
            # The console's tool page reads this bridge's /metrics (no Prometheus here).
            "DISPATCH_BRIDGE_URL": self.urls["bridge"],
            "DISPATCH_GATEWAY_TOKEN": gateway_token,
            "DISPATCH_AGENT_KEYS": f"bench-agent:supervisor:{_digest(agent_key)}",
            "DISPATCH_RATE_LIMIT_PER_S": "1000000",
            "DISPATCH_RATE_LIMIT_BURST": "1000000",
            # The one bench key stands for a fleet of agents: no per-key share of in flight
            # (bench/noisy_neighbour.py sets the defaults back, per key being its subject).
            "DISPATCH_AGENT_MAX_IN_FLIGHT": "1000000",
            "DISPATCH_AGENT_MAX_IN_FLIGHT_BYTES": str(2**40),
            "DISPATCH_AGENT_MAX_BYTES_PER_S": str(2**40),
            **self.extra_env,
        }
        cli = str(Path(sys.executable).parent / "dispatch-bridge")
        floor = (sys.executable, "-m", "bench.proxy_floor")
        services = [
            ("api", (cli, "serve-api")),
            ("bridge", (cli, "serve-bridge")),
            ("proxy", (*floor, str(proxy_port), self.urls["api"], gateway_token)),
        ]
        if self.observed_proxy:
            observed = (*floor, str(observed_port), self.urls["api"], gateway_token, "observed")
            services.append(("observed_proxy", observed))
        for name, args in services:
            self.procs[name] = await asyncio.create_subprocess_exec(
                *args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        if not await self._ready():
            await self.__aexit__()  # `async with` will not: its body never started
            raise RuntimeError("the services did not become ready")
        return self

    async def _ready(self, seconds: float = 60) -> bool:
        async with aiohttp.ClientSession() as http:
            for _ in range(int(seconds * 10)):
                try:
                    async with http.get(self.urls["bridge"] + "/readyz") as r:
                        ready = r.status == 200
                    # The bridge is ready without dispatch-api (its /readyz is about itself).
                    async with http.get(self.urls["api"] + "/readyz") as r:
                        ready = ready and r.status == 200
                    for proxy in ("proxy", "observed_proxy"):
                        if proxy not in self.urls:
                            continue
                        async with http.post(self.urls[proxy] + "/") as r:
                            ready = ready and r.status == 404  # listening
                    if ready:
                        return True
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        return False

    def process(self, name: str) -> psutil.Process:
        if name == "postgres":
            pid = int((self.folder / "pg" / "postmaster.pid").read_text().split()[0])
            return psutil.Process(pid)
        return psutil.Process(self.procs[name].pid)

    async def __aexit__(self, *exc: object) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
