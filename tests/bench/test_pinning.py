"""S6 pins its load generators to one core and every process of the product to the others,
the minimal proxies included: the floors' hop sharing the generators' core made the
open-loop caller fall seconds behind, and the floor read a queue of its own making.

The product here is a stand-in of real processes under the names `Product` starts (its
own start takes an embedded PostgreSQL); what is tested is which of them `pinned` moves."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import psutil
import pytest

from bench.overload import pinned


class _Started:
    """Real processes by name, as `Product.procs`; "postgres" runs a child, as its backends."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.procs = {name: subprocess.Popen(["sleep", "60"]) for name in names}
        self._postgres = subprocess.Popen(["sh", "-c", "sleep 60 & wait"])
        deadline = time.monotonic() + 10
        while not psutil.Process(self._postgres.pid).children() and time.monotonic() < deadline:
            time.sleep(0.01)  # until the shell has started its child

    def process(self, name: str) -> psutil.Process:
        if name == "postgres":
            return psutil.Process(self._postgres.pid)
        return psutil.Process(self.procs[name].pid)

    def stop(self) -> None:
        for p in (*self.procs.values(), self._postgres):
            p.kill()
            p.wait()


@pytest.fixture
def product() -> Iterator[_Started]:
    started = _Started(("api", "bridge", "proxy", "observed_proxy"))
    try:
        yield started
    finally:
        started.stop()


def _affinities(product: _Started) -> dict[str, set[int]]:
    postgres = product.process("postgres")
    every = {name: product.process(name) for name in product.procs}
    every |= {"postgres": postgres, "postgres backend": postgres.children()[0]}
    return {name: set(p.cpu_affinity()) for name, p in every.items()}


def test_every_process_of_the_product_runs_off_the_generators_core_while_pinned(
    product: _Started,
) -> None:
    cores = sorted(os.sched_getaffinity(0))
    with pinned(product) as note:
        during = _affinities(product)
        generators = os.sched_getaffinity(0)
    after = _affinities(product)

    assert all(cpus == set(cores) for cpus in after.values())  # restored
    assert os.sched_getaffinity(0) == set(cores)
    if len(cores) < 2:  # nothing to pin apart on one core, and the rows' note says nothing
        assert note == ""
        assert all(cpus == set(cores) for cpus in during.values())
        return
    assert generators == {cores[0]}
    others = len(cores) - 1
    assert note == f"generators pinned to CPU {cores[0]}, services to {others} other core(s)"
    assert all(cpus == set(cores[1:]) for cpus in during.values()), during
