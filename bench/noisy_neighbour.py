"""Noisy neighbour: one agent key saturating its limits with its heaviest calls must not hurt
the other keys' normal work (issue 14).

A product of its own (dispatch-api and the bridge as processes on an embedded PostgreSQL,
default settings) with `QUIET_KEYS` normal keys and one noisy key. Per repetition, two runs
of the same length, quiet then noisy (A B A B ...):

- quiet: the normal keys send `ticket.get` on their own tickets, with a small
  `evidence.attach` note every tenth call, at a constant total rate `RATE_PER_S` (open
  loop: latency counted from each call's due time, so a stall cannot hide), round robin
  over the keys;
- noisy: the same, while the noisy key runs `NOISY_WORKERS` workers in a closed loop, each
  uploading max-size evidence (5 MiB decoded, a ~7 MB body) as fast as it is let: it keeps
  its per-key limits (16 calls, 16 MiB in flight) saturated, and honours the
  `retry_after_ms` of each refusal, as a well-behaved but heavy agent would.

Each repetition ends with a third run, the noisy key asking first (`Expect: 100-continue`,
as curl does for large bodies): the bridge refuses before "100 Continue", so its refused
uploads are never sent; reported beside the target, not instead of it.

Then the floor, through the same dispatch-api: the quiet and noisy runs again via a hop that
only forwards (bench/proxy_floor.py, which parses and re-encodes each upload as any JSON hop
must), the noisy side storing as many uploads a second as the bridge let through, in an open
loop. Its p99 ratio is what the stored uploads cost the others on this machine whatever the
bridge does; the bridge's own share is the distance above it. Last, the bridge again with
the floor's noisy side (the same paced uploads): the difference from the floor is the hop's
alone, and from the target row what a herd of refused callers adds.

Targets: the normal keys keep >= 99.9 % success in the noisy run, and their p99 within 2x of
the quiet run. `/readyz` is polled during the noisy run: every poll must be 200 with the
breaker closed. On two shared cores the noisy key's uploads compete for CPU with everything
else (the bridge reads and parses each 7 MB body, dispatch-api decodes, hashes and stores
it), so the p99 ratio measures that contention as well as the bridge's isolation.

Each noisy run uploads to a fresh ticket (so no per-ticket evidence cap is reached).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import itertools
import secrets
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from hashlib import sha256
from typing import Any

import aiohttp
import orjson

from bench._context import Bench
from bench._load import Call, OpenLoopResult, open_loop
from bench._product import Product
from bench._report import Figure, figure
from bench.cpu import cpu_seconds
from bridge.settings import BridgeSettings

#: Normal agents call a few times a second each (a model thinks between calls): 8 keys at
#: 5 calls/s. Each key's open loop keeps calling whatever the latency, so beyond
#: 16 calls in flight (3.2 s of latency) its own per-key limit would refuse it.
QUIET_KEYS = 8
RATE_PER_S = 40.0
NOISY_WORKERS = 24
MAX_EVIDENCE = 5 * 1024 * 1024  # dispatch-api's default DISPATCH_EVIDENCE_MAX_BYTES
READYZ_EVERY_S = 0.25
CREATE_TRIES = 20  # a refused ticket.create waited out at most this often (it says how long)


def _rest(tool: str, arguments: dict[str, Any]) -> bytes:
    return orjson.dumps({"arguments": arguments})


def _note(ticket: str) -> bytes:
    text = base64.b64encode(b"checked the valve").decode()
    return _rest(
        "evidence.attach",
        {"ticket_id": ticket, "kind": "note", "content_type": "text/plain", "content_base64": text},
    )


class _Setup:
    """The keys (made before the product starts, which is configured with them), their
    tickets and calls."""

    product: Product

    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http
        self.keys = {f"quiet-{i}": secrets.token_urlsafe(24) for i in range(QUIET_KEYS)}
        self.keys["noisy"] = secrets.token_urlsafe(24)
        self.tickets: dict[str, str] = {}
        #: How the normal keys' failed calls ended: "status code/reason" -> count.
        self.failures: collections.Counter[str] = collections.Counter()

    @property
    def env(self) -> dict[str, str]:
        defaults = BridgeSettings()  # the per-key limits as shipped (Product lifts them)
        return {
            "DISPATCH_AGENT_MAX_IN_FLIGHT": str(defaults.agent_max_in_flight),
            "DISPATCH_AGENT_MAX_IN_FLIGHT_BYTES": str(defaults.agent_max_in_flight_bytes),
            "DISPATCH_AGENT_MAX_BYTES_PER_S": str(defaults.agent_max_bytes_per_s),
            "DISPATCH_AGENT_KEYS": ",".join(
                f"{name}:supervisor:{sha256(key.encode()).hexdigest()}"
                for name, key in self.keys.items()
            ),
        }

    def url(self, tool: str, via: str = "bridge") -> str:
        """`tool`'s REST invoke URL on the bridge, or on the minimal proxy (`via="proxy"`)."""
        return f"{self.product.urls[via]}/v1/tools/{tool}/invoke"

    def headers(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}", "Content-Type": "application/json"}

    async def create_ticket(self, name: str) -> str:
        """A fresh ticket for `name`. Right after a noisy run the noisy key is still over
        its byte rate, so a refusal is waited out as told, as an agent would."""
        body = _rest("ticket.create", {"customer_name": f"Bench {name}", "priority": "P3"})
        for _ in range(CREATE_TRIES):
            async with self.http.post(
                self.url("ticket.create"), data=body, headers=self.headers(name)
            ) as r:
                reply = await r.json()
            if reply["ok"]:
                ticket: str = reply["result"]["ticket"]["id"]
                return ticket
            if not reply["error"].get("retryable"):
                break
            await asyncio.sleep((reply["error"].get("retry_after_ms") or 100) / 1000)
        raise AssertionError(reply)

    def normal_work(self, via: str = "bridge") -> Call:
        """The quiet keys' calls, round robin; every tenth is a small write."""
        quiet = [n for n in self.keys if n != "noisy"]
        reads = [
            (self.url("ticket.get", via), _rest("ticket.get", {"ticket_id": self.tickets[n]}), n)
            for n in quiet
        ]
        writes = [(self.url("evidence.attach", via), _note(self.tickets[n]), n) for n in quiet]
        steps = itertools.cycle(
            [(url, body, self.headers(n)) for url, body, n in reads * 9 + writes]
        )
        http, failures = self.http, self.failures

        async def call() -> int:
            url, body, headers = next(steps)
            async with http.post(url, data=body, headers=headers) as resp:
                raw = await resp.read()
                if resp.status >= 300:
                    failures[_failure(resp.status, raw)] += 1
                return resp.status

        return call


def _failure(status: int, raw: bytes) -> str:
    """ "429 rate_limited/bridge_overloaded": the status, the envelope's code and reason."""
    try:
        error = orjson.loads(raw)["error"]
        return f"{status} {error['code']}/{(error.get('details') or {}).get('reason', '-')}"
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return f"{status} (no envelope)"


async def _noisy(
    url: str, key: str, ticket: str, seconds: float, mode: str = "closed"
) -> dict[str, int]:
    """Max-size evidence uploads for `seconds`; how they ended (ok, or the refusal's reason /
    error code). `mode` "closed": `NOISY_WORKERS` closed-loop workers; "asks-first": the
    same, each upload sending `Expect: 100-continue` and its body only when told to continue
    (as curl does for large bodies), so a refused one never crosses the wire; a number:
    that many uploads a second in an open loop (the floor's, at the rate the bridge let
    through)."""
    content = base64.b64encode(secrets.token_bytes(MAX_EVIDENCE)).decode()
    arguments = {
        "ticket_id": ticket,
        "kind": "photo",
        "content_type": "image/jpeg",
        "content_base64": content,
    }
    body = _rest("evidence.attach", arguments)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    seen: dict[str, int] = {}
    until = time.monotonic() + seconds
    asks_first = mode == "asks-first"

    async def worker(http: aiohttp.ClientSession) -> None:
        while time.monotonic() < until:
            status = 0
            try:
                post = http.post(url, data=body, headers=headers, expect100=asks_first)
                async with post as resp:
                    raw, status = await resp.read(), resp.status
                reply = orjson.loads(raw)
            except (aiohttp.ClientError, orjson.JSONDecodeError):
                reply = {"ok": False, "error": {"code": f"http_{status}"}}
            if reply["ok"]:
                seen["ok"] = seen.get("ok", 0) + 1
                continue
            error = reply["error"]
            reason = (error.get("details") or {}).get("reason") or error["code"]
            seen[reason] = seen.get(reason, 0) + 1
            # As told, but not past the run's end: a refused upload's turn can be tens of
            # seconds away, and the run is over by then.
            wait_s = (error.get("retry_after_ms") or 100) / 1000
            await asyncio.sleep(min(wait_s, max(0.0, until - time.monotonic())))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        if mode in ("closed", "asks-first"):
            await asyncio.gather(*(worker(http) for _ in range(NOISY_WORKERS)))
            return seen

        async def upload() -> int:
            async with http.post(url, data=body, headers=headers) as resp:
                await resp.read()
                return resp.status

        paced = await open_loop(upload, float(mode), seconds)
        statuses = paced.statuses.items()
        return {"ok" if 200 <= status < 300 else f"http_{status}": n for status, n in statuses}


async def _noisy_process(
    setup: _Setup, url: str, ticket: str, seconds: float, mode: str
) -> dict[str, int]:
    """`_noisy` in a process of its own: writing 7 MB bodies from the measuring process
    would stall its event loop and be counted against the normal keys' latency."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.noisy_neighbour",
        url,
        setup.keys["noisy"],
        ticket,
        str(seconds),
        mode,
        stdout=subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the noisy key's process exited {proc.returncode}")
    seen: dict[str, int] = orjson.loads(out)
    return seen


async def _poll_readyz(setup: _Setup, stop: asyncio.Event, polls: list[tuple[int, str]]) -> None:
    url = setup.product.urls["bridge"] + "/readyz"
    while not stop.is_set():
        async with setup.http.get(url) as resp:
            polls.append((resp.status, (await resp.json())["breaker"]))
        await asyncio.sleep(READYZ_EVERY_S)


async def _noisy_run(
    setup: _Setup,
    work: Call,
    rate: float,
    seconds: float,
    mode: str = "closed",
    via: str = "bridge",
) -> tuple[OpenLoopResult, dict[str, int], list[tuple[int, str]], float]:
    """The normal work while the noisy key uploads (`mode` as `_noisy`'s) through `via`:
    (its result, the noisy key's outcomes, the /readyz polls, how long the noisy key ran)."""
    stop, polls = asyncio.Event(), list[tuple[int, str]]()
    ticket = await setup.create_ticket("noisy")
    noisy_s = seconds + 2.0  # from a second before the measured run to a second after
    url = setup.url("evidence.attach", via)
    noise = asyncio.create_task(_noisy_process(setup, url, ticket, noisy_s, mode))
    ready = asyncio.create_task(_poll_readyz(setup, stop, polls))
    await asyncio.sleep(1.0)  # the noisy key at its limits before measuring
    result = await open_loop(work, rate, seconds)
    seen = await noise
    stop.set()
    await ready
    return result, seen, polls, noisy_s


async def run(bench: Bench) -> list[Figure]:
    sizes = bench.sizes
    seconds = 1.0 if sizes.quick else max(sizes.seconds, 10.0)
    rate = 20.0 if sizes.quick else RATE_PER_S
    success, ratio, quiet_p99, noisy_p99, uploads, refused, unready, quiet_ok, asking_ratio = (
        list[float]() for _ in range(9)
    )
    floor_ratio, floor_quiet_p99, floor_noisy_p99, floor_uploads, paced_ratio = (
        list[float]() for _ in range(5)
    )
    cpu: dict[str, list[float]] = {"bridge": [], "api": [], "postgres": []}
    async with AsyncExitStack() as stack:
        connector = aiohttp.TCPConnector(limit=0)
        http = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
        setup = _Setup(http)
        setup.product = await stack.enter_async_context(Product(setup.env))
        for name in setup.keys:
            if name != "noisy":
                setup.tickets[name] = await setup.create_ticket(name)
        work, floor_work = setup.normal_work(), setup.normal_work(via="proxy")
        await open_loop(work, rate, 1.0)  # warm-up
        await open_loop(floor_work, rate, 1.0)
        setup.failures.clear()  # the warm-up's
        for _ in range(sizes.reps):
            quiet = await open_loop(work, rate, seconds)
            quiet_ok.append(100.0 * quiet.statuses.get(200, 0) / sum(quiet.statuses.values()))
            before = {n: cpu_seconds(setup.product.process(n), tree=n == "postgres") for n in cpu}
            noisy, seen, polls, ran_s = await _noisy_run(setup, work, rate, seconds)
            for n, series in cpu.items():
                used = cpu_seconds(setup.product.process(n), tree=n == "postgres") - before[n]
                series.append(used / ran_s)
            good = sum(n for status, n in noisy.statuses.items() if 200 <= status < 300)
            success.append(100.0 * good / sum(noisy.statuses.values()))
            quiet_p99.append(quiet.p99_ms)
            noisy_p99.append(noisy.p99_ms)
            ratio.append(noisy.p99_ms / quiet.p99_ms)
            uploads.append(seen.get("ok", 0) / ran_s)
            calls = sum(seen.values())
            refused.append(sum(n for k, n in seen.items() if k != "ok") / max(1, calls))
            unready.append(sum(1 for status, state in polls if (status, state) != (200, "closed")))
            asking, _, _, _ = await _noisy_run(setup, work, rate, seconds, "asks-first")
            asking_ratio.append(asking.p99_ms / quiet.p99_ms)
            # The floor: the same work and the same stored uploads a second, through a hop
            # that only forwards (bench/proxy_floor.py), to the same dispatch-api.
            paced_rate = f"{max(uploads[-1], 0.1):.3f}"
            floor_quiet = await open_loop(floor_work, rate, seconds)
            floor, floor_seen, _, _ = await _noisy_run(
                setup, floor_work, rate, seconds, paced_rate, via="proxy"
            )
            floor_ratio.append(floor.p99_ms / floor_quiet.p99_ms)
            # And the bridge with the floor's noisy side: the same paced uploads, no herd of
            # refused callers, so the two differ by the hop alone.
            paced_quiet = await open_loop(work, rate, seconds)
            paced, _, _, _ = await _noisy_run(setup, work, rate, seconds, paced_rate)
            paced_ratio.append(paced.p99_ms / paced_quiet.p99_ms)
            floor_quiet_p99.append(floor_quiet.p99_ms)
            floor_noisy_p99.append(floor.p99_ms)
            floor_uploads.append(floor_seen.get("ok", 0) / ran_s)
    note = f"{QUIET_KEYS} normal keys at {rate:g} calls/s in all, 1 noisy key x {NOISY_WORKERS}"
    failed = ", ".join(f"{k}: {n}" for k, n in setup.failures.most_common(5)) or "none"
    return [
        figure(
            "Noisy",
            "others' success with a noisy neighbour (%)",
            success,
            ">= 99.9",
            f"{note}; others' failures, quiet and noisy runs: {failed}",
        ),
        figure("Noisy", "others' p99, noisy / quiet run", ratio, "<= 2", note),
        figure(
            "Noisy",
            "others' p99, noisy key asking first (Expect: 100-continue) / quiet run",
            asking_ratio,
            "",
            "the same noisy key, its refused uploads never sent",
        ),
        figure(
            "Noisy",
            "minimal proxy: others' p99, noisy / quiet run (floor)",
            floor_ratio,
            "",
            "the same work and dispatch-api through bench/proxy_floor.py, with as many"
            " uploads stored a second as the bridge let through (open loop)",
        ),
        figure(
            "Noisy",
            "bridge, the floor's paced uploads: others' p99, noisy / quiet run",
            paced_ratio,
            "",
            "the noisy key uploading as the floor's side does (open loop), through the bridge",
        ),
        figure("Noisy", "minimal proxy: others' p99, quiet run (ms)", floor_quiet_p99, ""),
        figure("Noisy", "minimal proxy: others' p99, noisy run (ms)", floor_noisy_p99, ""),
        figure("Noisy", "minimal proxy: uploads stored per s", floor_uploads, ""),
        figure("Noisy", "others' success, quiet run (%)", quiet_ok, ""),
        figure("Noisy", "others' p99, quiet run (ms)", quiet_p99, ""),
        figure("Noisy", "others' p99, noisy run (ms)", noisy_p99, ""),
        figure("Noisy", "/readyz polls not 200 or breaker not closed", unready, "<= 0"),
        figure("Noisy", "noisy key: 5 MiB uploads stored per s", uploads, ""),
        figure("Noisy", "noisy key: share of its calls refused (rate_limited)", refused, ""),
        *(figure("Noisy", f"noisy run: {n} CPU (cores)", v, "") for n, v in cpu.items()),
    ]


def main() -> None:
    """The noisy key's process: URL KEY TICKET SECONDS MODE; prints its outcomes as JSON."""
    url, key, ticket, seconds, mode = sys.argv[1:6]
    seen = asyncio.run(_noisy(url, key, ticket, float(seconds), mode))
    sys.stdout.write(orjson.dumps(seen).decode())


if __name__ == "__main__":
    main()
