"""Where the bridge's CPU goes: py-spy samples the bridge process while wrk saturates it
with `ticket.get` calls. Self time is grouped by package (site-packages), standard-library
module, or project module, and the table is added to the results file; the raw collapsed
stacks are written beside it (bench/results/bridge-profile.txt) for a flame graph.
"""

from __future__ import annotations

import asyncio
import collections
import re
import shutil
import sys
import sysconfig
from pathlib import Path

from bench._context import Bench
from bench._load import have_wrk, wrk
from bench._report import Figure

_FRAME = re.compile(r"\((?P<path>[^:()]+):\d+\)$")
_STDLIB = sysconfig.get_paths()["stdlib"]
_ROOT = str(Path(__file__).resolve().parents[1]) + "/"


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


async def run(bench: Bench) -> list[Figure]:
    spy = _py_spy()
    if spy is None or not have_wrk():
        bench.sections["Bridge profile"] = "py-spy or wrk is not installed: no profile taken."
        return []
    seconds = 2 if bench.sizes.quick else 10
    out = bench.out / "bridge-profile.txt"
    record = await asyncio.create_subprocess_exec(
        spy,
        "record",
        "--pid",
        str(bench.product.process("bridge").pid),
        "--duration",
        str(seconds),
        "--rate",
        "250",
        "--format",
        "raw",
        "--full-filenames",
        "--nonblocking",
        "--output",
        str(out),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.to_thread(
        wrk,
        bench.product.urls["bridge"] + "/v1/tools/ticket.get/invoke",
        method="POST",
        body=bench.rest_body(bench.ticket),
        headers=bench.agent_headers,
        connections=bench.sizes.concurrency,
        seconds=seconds + 1,
    )
    if await record.wait() != 0 or not out.exists():
        bench.sections["Bridge profile"] = "py-spy could not attach (needs ptrace rights)."
        return []
    samples, rows = summarize(_tidy(out))
    table = "\n".join(f"| {name} | {share * 100:.1f} % |" for name, share in rows)
    bench.sections["Bridge profile"] = (
        f"py-spy, {samples} samples of the bridge under wrk (`ticket.get`, {seconds} s); self"
        " time by package / module (collapsed stacks in `bridge-profile.txt`).\n\n"
        "| where | self time |\n|---|---|\n" + table
    )
    return []
