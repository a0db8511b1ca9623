"""Where a process's CPU goes: py-spy samples it while a load generator keeps it busy.
Self time is grouped by package (site-packages), standard-library module, or project
module, and the table is added to the results file; the raw collapsed stacks are written
beside it (bench/results/<title>.txt) for a flame graph.

`run` profiles the bridge and the minimal forwarding proxy (S2's floor) under the same wrk
load, one after the other; other scenarios call `sampled` for their own process and load
(S3: dispatch-api under the action load, S4: the bridge at 100 % tracing).
"""

from __future__ import annotations

import asyncio
import collections
import re
import shutil
import sys
import sysconfig
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench._context import Bench
from bench._load import have_wrk, wrk
from bench._report import Figure

_FRAME = re.compile(r"\((?P<path>[^:()]+):\d+\)$")
_STDLIB = sysconfig.get_paths()["stdlib"]
_ROOT = str(Path(__file__).resolve().parents[1]) + "/"
_RATE = 250  # samples per second


def _component(path: str) -> str:
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if path.startswith(_STDLIB):
        rest = path[len(_STDLIB) :].lstrip("/")
        return "stdlib " + rest.split("/", 1)[0].removesuffix(".py")
    return path.removeprefix(_ROOT)


def summarize(collapsed: str, top: int = 25) -> tuple[int, list[tuple[str, float]]]:
    """(samples, [(component, share of samples as self time)]) from py-spy's raw output."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        leaf = stack.rsplit(";", 1)[-1]
        found = _FRAME.search(leaf)
        counts[_component(found["path"]) if found else leaf] += int(n)
        total += int(n)
    return total, [(k, v / total) for k, v in counts.most_common(top)]


def _py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def _tidy(out: Path) -> str:
    """The profile's text; the file keeps it with paths shortened (no machine paths)."""
    text = out.read_text()
    out.write_text(text.replace(_ROOT, "").replace(_STDLIB + "/", "stdlib/"))
    return text


async def sampled(
    bench: Bench,
    process: str,
    title: str,
    what: str,
    load: Callable[[float], Awaitable[float]],
) -> None:
    """Sample `bench.product`'s `process` with py-spy while `load(seconds)` runs (it
    returns the calls/s it made), and add the self-time table as the results file's
    section `title` (stacks in a file named after it)."""
    spy = _py_spy()
    if spy is None:
        bench.sections[title] = "py-spy is not installed: no profile taken."
        return
    seconds = 2 if bench.sizes.quick else 10
    out = bench.out / (re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") + ".txt")
    record = await asyncio.create_subprocess_exec(
        spy,
        "record",
        "--pid",
        str(bench.product.process(process).pid),
        "--duration",
        str(seconds),
        "--rate",
        str(_RATE),
        "--format",
        "raw",
        "--full-filenames",
        "--nonblocking",
        "--output",
        str(out),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    rate = await load(seconds + 1)
    if await record.wait() != 0 or not out.exists():
        bench.sections[title] = "py-spy could not attach (needs ptrace rights)."
        return
    samples, rows = summarize(_tidy(out))
    # Samples are taken while the process runs (not while it waits), so they are its CPU
    # time: share x busy seconds / calls made in the sampled seconds = µs per call.
    per_call = samples / _RATE / max(rate * seconds, 1) * 1e6
    table = "\n".join(
        f"| {where} | {share * 100:.1f} % | {share * per_call:.0f} |" for where, share in rows
    )
    bench.sections[title] = (
        f"py-spy, {samples} samples of the {process} process under {what}, {seconds} s at"
        f" {_RATE} Hz: {samples / (seconds * _RATE):.2f} of a core busy at {rate:.0f} calls/s,"
        f" about {per_call:.0f} µs of CPU per call. Self time by package / module; collapsed"
        f" stacks in `{out.name}`.\n\n| where | self time | µs per call |\n|---|---|---|\n" + table
    )


def wrk_load(bench: Bench, target: str = "bridge") -> Callable[[float], Awaitable[float]]:
    """wrk sending `ticket.get` over REST to `bench.product`'s `target` ("bridge", "proxy")
    for the seconds asked; returns calls/s."""
    url = bench.product.urls[target] + "/v1/tools/ticket.get/invoke"

    async def load(seconds: float) -> float:
        return await asyncio.to_thread(
            wrk,
            url,
            method="POST",
            body=bench.rest_body(bench.ticket),
            headers=bench.agent_headers,
            connections=bench.sizes.concurrency,
            seconds=seconds,
        )

    return load


async def run(bench: Bench) -> list[Figure]:
    if not have_wrk():
        bench.sections["Bridge profile"] = "wrk is not installed: no profile taken."
        return []
    what = "wrk (`ticket.get`)"
    await sampled(bench, "bridge", "Bridge profile", what, wrk_load(bench, "bridge"))
    await sampled(bench, "proxy", "Minimal proxy profile", what, wrk_load(bench, "proxy"))
    return []
