"""Where a process's CPU goes: py-spy samples it while a load generator keeps it busy.
Self time is grouped by package (site-packages), standard-library module, or project
module, and the table is added to the results file; the raw collapsed stacks are written
beside it (bench/results/<title>.txt) for a flame graph.

`run` profiles the bridge and the minimal forwarding proxies (S2's floors) under the same wrk
load, one after the other; other scenarios call `sampled` for their own process and load
(S3: dispatch-api and its floor under the action load, S4: the bridge at 100 % tracing).
`compared` sets two profiles side by side, per call: where a product spends the CPU its
floor does not, by module.
"""

from __future__ import annotations

import asyncio
import collections
import re
import shutil
import sys
import sysconfig
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench._context import Bench
from bench._load import have_wrk, wrk
from bench._report import Figure
from bench.cpu import cpu_seconds

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


def self_time(collapsed: str) -> tuple[int, collections.Counter[str]]:
    """(samples, self-time samples per component) from py-spy's raw output."""
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
    return total, counts


@dataclass(frozen=True)
class Profile:
    """One process's profile: µs of CPU per call, and each component's share of it."""

    process: str
    per_call_us: float
    shares: dict[str, float]

    def us(self, component: str) -> float:
        return self.shares.get(component, 0.0) * self.per_call_us


def difference(product: Profile, floor: Profile, top: int = 15) -> list[tuple[str, float, float]]:
    """The `top` components by how much more µs per call `product` spends in them than
    `floor`: (component, product µs, floor µs), largest difference first."""
    names = set(product.shares) | set(floor.shares)
    ranked = sorted(names, key=lambda n: (floor.us(n) - product.us(n), n))
    return [(n, product.us(n), floor.us(n)) for n in ranked[:top]]


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
    pid: int | None = None,
) -> Profile | None:
    """Sample `bench.product`'s `process` (or the process `pid`, named `process`) with
    py-spy while `load(seconds)` runs (it returns the calls/s it made), add the self-time
    table as the results file's section `title` (stacks in a file named after it) and
    return the profile; None when none could be taken (the section says why)."""
    spy = _py_spy()
    if spy is None:
        bench.sections[title] = "py-spy is not installed: no profile taken."
        return None
    seconds = 2 if bench.sizes.quick else 10
    out = bench.out / (re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") + ".txt")
    target = psutil.Process(pid) if pid is not None else bench.product.process(process)
    record = await asyncio.create_subprocess_exec(
        spy,
        "record",
        "--pid",
        str(target.pid),
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
    busy = cpu_seconds(target)
    rate = await load(seconds + 1)
    busy = cpu_seconds(target) - busy
    if await record.wait() != 0 or not out.exists():
        bench.sections[title] = "py-spy could not attach (needs ptrace rights)."
        return None
    samples, counts = self_time(_tidy(out))
    rows = [(k, v / samples) for k, v in counts.most_common(25)]
    # A sample is taken whenever the process is not waiting in a system call, so on a busy
    # machine time spent runnable but not running counts too: the samples give each
    # component's share, the process's CPU time over the calls made gives µs per call.
    per_call = busy / max(rate * (seconds + 1), 1) * 1e6
    table = "\n".join(
        f"| {where} | {share * 100:.1f} % | {share * per_call:.0f} |" for where, share in rows
    )
    bench.sections[title] = (
        f"py-spy, {samples} samples of the {process} process under {what}, {seconds} s at"
        f" {_RATE} Hz, at {rate:.0f} calls/s: {per_call:.0f} µs of CPU per call (the process's"
        f" CPU time over the calls made), {busy / (seconds + 1):.2f} of a core. Self time by"
        f" package / module, as shares of the samples and of that CPU per call; collapsed"
        f" stacks in `{out.name}`.\n\n| where | self time | µs per call |\n|---|---|---|\n" + table
    )
    return Profile(process, per_call, {k: v / samples for k, v in counts.items()})


def compared(
    bench: Bench,
    title: str,
    product: Profile | None,
    floor: Profile | None,
    names: tuple[str, str] | None = None,
) -> None:
    """Add the section `title`: where `product` spends, per call, the CPU `floor` (the
    least code doing the same work, under the same load) does not, by component. `names`
    label the two (their processes' names by default)."""
    if product is None or floor is None:
        bench.sections[title] = "One of the two profiles could not be taken: nothing compared."
        return
    ours, theirs = names or (product.process, floor.process)
    rows = difference(product, floor)
    more = product.per_call_us - floor.per_call_us
    listed = sum(p - f for _, p, f in rows)
    table = "\n".join(f"| {name} | {p:.1f} | {f:.1f} | {p - f:+.1f} |" for name, p, f in rows)
    bench.sections[title] = (
        f"The two profiles above, per call: the {ours} {product.per_call_us:.0f} µs of CPU,"
        f" the {theirs} {floor.per_call_us:.0f} ({more:+.0f}). The components where the"
        f" {ours} spends the most more (self time, µs per call: each one's share of its"
        f" process's samples times that process's CPU per call, so sizes rather than exact"
        f" figures), together {listed:+.0f}:\n\n"
        f"| where | {ours} | {theirs} | more |\n|---|---|---|---|\n" + table
    )


def wrk_load(bench: Bench, target: str = "bridge") -> Callable[[float], Awaitable[float]]:
    """wrk sending `ticket.get` over REST to `bench.product`'s `target` ("bridge", "proxy",
    "observed_proxy") for the seconds asked; returns calls/s."""
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
    bridge = await sampled(bench, "bridge", "Bridge profile", what, wrk_load(bench, "bridge"))
    await sampled(bench, "proxy", "Minimal proxy profile", what, wrk_load(bench, "proxy"))
    if "observed_proxy" in bench.product.urls:
        observed = await sampled(
            bench,
            "observed_proxy",
            "Observed proxy profile",
            what,
            wrk_load(bench, "observed_proxy"),
        )
        compared(bench, "Bridge against the observed proxy (S2)", bridge, observed)
    return []
