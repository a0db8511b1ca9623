"""A serving process receives small messages without a fresh 256 KiB buffer per read (each
was a new mapping from glibc: mmap, mremap, munmap and a page fault, telemetry/_reads.py),
and a large body still arrives whole. Run in child processes: the read size is process-wide
and the test process's own is left be."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import orjson

from telemetry import READ_BYTES
from testkit.processes import free_port

#: A served request and its answer, read by serve()'s process (the client is in it too).
_CHILD = """
import asyncio, os, signal, tracemalloc, orjson, aiohttp
from aiohttp import web
from dispatch_bridge._serve import serve

SIZED = {sized}
PORT = {port}

async def echo(request):
    body = await request.read()
    return web.Response(body=orjson.dumps({{"bytes": len(body)}}))

async def main():
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post("/echo", echo)
    seen = {{}}

    async def drive(port):
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{{port}}/echo"
            async with http.post(url, data=b"warm") as r:
                await r.read()
            tracemalloc.start()
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            for _ in range(20):
                async with http.post(url, data=b'{{"ticket_id": "t-1"}}') as r:
                    await r.read()
            seen["small_peak"] = tracemalloc.get_traced_memory()[1] - base
            tracemalloc.stop()
            async with http.post(url, data=b"x" * (3 * 1024 * 1024 + 7)) as r:
                seen["large"] = orjson.loads(await r.read())["bytes"]
        print(orjson.dumps(seen).decode(), flush=True)
        os.kill(os.getpid(), signal.SIGTERM)

    def listening():
        asyncio.get_running_loop().create_task(drive(PORT))

    if not SIZED:  # the control: serve() as it was before
        import dispatch_bridge._serve as served
        served.size_socket_reads = lambda: None
    await serve([(app, "127.0.0.1", PORT, lambda app: None)], listening=listening,
                drain_timeout_s=0.1)

asyncio.run(main())
"""


def _run(*, sized: bool) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_CHILD.format(sized=sized, port=free_port()))],
        capture_output=True,
        check=True,
        timeout=60,
    )
    answer: dict[str, int] = orjson.loads(done.stdout.splitlines()[-1])
    return answer


def test_a_served_process_reads_small_messages_without_a_quarter_mebibyte_buffer_each() -> None:
    default, sized = _run(sized=False), _run(sized=True)
    # Each read of the unsized process allocated asyncio's 256 KiB at once, however small
    # the message; the sized process never holds more than a read's worth and change.
    assert default["small_peak"] >= 256 * 1024
    assert sized["small_peak"] < 256 * 1024 - READ_BYTES
    # A body many reads long still arrives whole.
    assert sized["large"] == default["large"] == 3 * 1024 * 1024 + 7
