"""The services' HTTP connections receive a small message without a fresh 256 KiB buffer per
read (each was a new mapping from glibc: mmap, mremap, munmap and a page fault,
telemetry/_reads.py): the listener `serve` opens and the bridge's client connector read
exactly what arrived, and large bodies still arrive whole both ways. Each case runs in a
child process, whose every allocation tracemalloc sees: the server and the client in it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import orjson
import pytest

from testkit.processes import free_port

_CHILD = """
import asyncio, os, signal, sys, tracemalloc, orjson, aiohttp
from aiohttp import web
from dispatch_bridge._serve import serve
from telemetry import exact_read_connector

SERVER, CLIENT, PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])
LARGE = b"x" * (3 * 1024 * 1024 + 7)


async def echo(request):
    return web.Response(body=await request.read())


async def drive():
    connector = exact_read_connector() if CLIENT == "exact" else aiohttp.TCPConnector()
    seen = {}
    async with aiohttp.ClientSession(connector=connector) as http:
        url = f"http://127.0.0.1:{PORT}/echo"
        async with http.post(url, data=b"warm") as r:
            await r.read()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(20):
            async with http.post(url, data=b'{"ticket_id": "t-1"}') as r:
                assert await r.read() == b'{"ticket_id": "t-1"}'
        seen["small_peak"] = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        async with http.post(url, data=LARGE) as r:  # many reads each way
            seen["large_whole"] = await r.read() == LARGE
    print(orjson.dumps(seen).decode(), flush=True)


async def main():
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post("/echo", echo)
    if SERVER == "plain":  # aiohttp's own listener, asyncio's own reads
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", PORT).start()
        await drive()
        await runner.cleanup()
        return

    def listening():
        async def then_stop():
            await drive()
            os.kill(os.getpid(), signal.SIGTERM)

        tasks.add(asyncio.get_running_loop().create_task(then_stop()))

    tasks = set()
    await serve([(app, "127.0.0.1", PORT, lambda app: None)], listening=listening,
                drain_timeout_s=0.1)


asyncio.run(main())
"""


def _run(server: str, client: str) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_CHILD), server, client, str(free_port())],
        capture_output=True,
        check=True,
        timeout=60,
    )
    answer: dict[str, int] = orjson.loads(done.stdout.splitlines()[-1])
    return answer


#: What 20 small round trips may hold at once at most when neither side takes 256 KiB.
_SMALL = 128 * 1024


def test_served_listener_and_bridge_connector_read_small_messages_without_big_buffers() -> None:
    seen = _run("served", "exact")
    assert seen["small_peak"] < _SMALL
    assert seen["large_whole"]


@pytest.mark.parametrize(
    ("server", "client"),
    [("plain", "exact"), ("served", "plain")],
    ids=["aiohttp's listener", "aiohttp's connector"],
)
def test_either_side_reading_as_asyncio_does_takes_a_quarter_mebibyte_per_read(
    server: str, client: str
) -> None:
    # The controls: each side alone still reading asyncio's way shows up, so the test above
    # fails when either side's exact reads are gone.
    seen = _run(server, client)
    assert seen["small_peak"] >= 256 * 1024
    assert seen["large_whole"]
