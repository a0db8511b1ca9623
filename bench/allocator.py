"""Alloc: what the image's glibc allocator settings (Dockerfile, ALLOCATOR_ENV) buy.

asyncio's selector transport reads each socket with `recv(256 KiB)`: a fresh 256 KiB
buffer per read, cut down to what arrived. glibc serves blocks above its mmap threshold
(128 KiB by default) with mmap, so a small read can cost mmap, mremap and munmap
(python/cpython#85451). The default threshold is also dynamic: each larger block freed
raises it and the trim threshold with it, so the heap keeps its free top and RSS creeps
(bench/results/soak.md). The services' HTTP connections no longer read that way: they
receive into a buffer they keep and copy out exactly what arrived (telemetry/_reads.py),
and so do dispatch-api's connections to PostgreSQL, so the settings now differ for them
mostly in their heap; the echo below still reads as asyncio does. Four settings, side by side:

- glibc defaults (dynamic thresholds);
- the image's: both fixed at 128 KiB (RSS flat in the soak; every read buffer from mmap);
- both at 1 MiB (read buffers from the heap: faster, but RSS grew 4.9 % (bridge) and
  7.4 % (dispatch-api) in a 10-minute soak, still growing in its second half).
- the image's thresholds with pymalloc (Python's default) instead of the image's
  `PYTHONMALLOC=malloc` (every Python object from glibc: no pymalloc arenas, so the
  bridge's idle trim can give a burst's memory back; bench/memory.py).

Two measures: a socket round trip in one asyncio process (an echo over loopback, CPU µs
per round trip, the read path alone), and saturation throughput through the bridge (four
products, each its own PostgreSQL, dispatch-api and bridge, driven in turn, interleaved).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from contextlib import AsyncExitStack

from bench._context import Bench, bridge_saturation, side_by_side
from bench._load import have_wrk
from bench._product import Product
from bench._report import Figure, figure
from testkit.image import ALLOCATOR_ENV, without_allocator_env

SETTINGS: dict[str, dict[str, str]] = {
    "defaults": {},
    "image": ALLOCATOR_ENV,
    "1 MiB": {"MALLOC_MMAP_THRESHOLD_": "1048576", "MALLOC_TRIM_THRESHOLD_": "1048576"},
    # The image takes every Python object from glibc (what bench/memory.py's burst needs to
    # give its memory back: pymalloc arenas stay pinned); this side measures its price.
    "image, pymalloc": {**ALLOCATOR_ENV, "PYTHONMALLOC": "pymalloc"},
}

# Echo over loopback, one 600-byte message outstanding: prints CPU µs per round trip.
_ECHO = """
import asyncio, sys, time

async def main(n):
    async def echo(r, w):
        while data := await r.read(65536):
            w.write(data)
        w.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    r, w = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
    started = time.process_time()
    for _ in range(n):
        w.write(b"x" * 600)
        await r.readexactly(600)
    print((time.process_time() - started) / n * 1e6)
    w.close()
    await w.wait_closed()
    server.close()
    await server.wait_closed()

asyncio.run(main(int(sys.argv[1])))
"""


def _echo_us(setting: dict[str, str], round_trips: int) -> float:
    env = without_allocator_env() | setting
    out = subprocess.run(
        [sys.executable, "-c", _ECHO, str(round_trips)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return float(out)


async def run(bench: Bench) -> list[Figure]:
    sizes = bench.sizes
    round_trips = 1000 if sizes.quick else 20_000
    echo: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for _ in range(sizes.reps):
        for name, setting in SETTINGS.items():
            echo[name].append(await asyncio.to_thread(_echo_us, setting, round_trips))

    async with AsyncExitStack() as stack:
        products = {name: Product(allocator=setting) for name, setting in SETTINGS.items()}
        benches = await side_by_side(stack, bench, products)
        image, large, pymalloc = [], [], []
        for _ in range(sizes.reps):
            defaults = await bridge_saturation(benches["defaults"])
            image.append(await bridge_saturation(benches["image"]) / defaults)
            large.append(await bridge_saturation(benches["1 MiB"]) / defaults)
            pymalloc.append(await bridge_saturation(benches["image, pymalloc"]) / defaults)
    tool = "wrk" if have_wrk() else "aiohttp closed loop"
    return [
        *(
            figure("Alloc", f"socket round trip, CPU µs ({name})", values, "")
            for name, values in echo.items()
        ),
        figure(
            "Alloc", f"throughput, image (128 KiB, malloc) / glibc defaults ({tool})", image, ""
        ),
        figure("Alloc", f"throughput, 1 MiB thresholds / glibc defaults ({tool})", large, ""),
        figure("Alloc", f"throughput, image with pymalloc / glibc defaults ({tool})", pymalloc, ""),
    ]
