"""A process tree's CPU time, as the bench reads PostgreSQL's (a postmaster and its backends),
keeps the CPU of children that exited during the measurement."""

from __future__ import annotations

import subprocess
import sys

import psutil

from bench.cpu import cpu_seconds

#: Waits for a line, runs a child that burns CPU for about 0.4 s and exits, says "done".
PARENT = """
import subprocess, sys
sys.stdin.readline()
burn = "import time\\nend = time.process_time() + 0.4\\nwhile time.process_time() < end: pass"
subprocess.run([sys.executable, "-c", burn], check=True)
print("done", flush=True)
sys.stdin.readline()
"""


def test_a_child_that_exits_mid_measurement_keeps_its_cpu_in_the_tree() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as parent:
        assert parent.stdin is not None
        assert parent.stdout is not None
        tree = psutil.Process(parent.pid)
        before = cpu_seconds(tree, tree=True)
        parent.stdin.write("go\n")
        parent.stdin.flush()
        assert parent.stdout.readline() == "done\n"  # the child has exited and been reaped
        burnt = cpu_seconds(tree, tree=True) - before
        parent.stdin.write("stop\n")
        parent.stdin.flush()

    assert burnt >= 0.35
