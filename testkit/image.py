"""What the container image sets for the services, for code that starts them as the image
would (the benchmarks' soak measures RSS growth); tests/deploy/test_dockerfile.py checks
these against the Dockerfile."""

from __future__ import annotations

import os

#: The allocator settings the Dockerfile gives both services (see the comment there): glibc's
#: thresholds, and Python's objects from glibc rather than pymalloc.
ALLOCATOR_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "131072",
    "MALLOC_TRIM_THRESHOLD_": "131072",
    "PYTHONMALLOC": "malloc",
}


def without_allocator_env() -> dict[str, str]:
    """This process's environment without any allocator setting, for a child that is given
    its own (ALLOCATOR_ENV, or a benchmark's alternative) and must not inherit ours."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "PYTHONMALLOC"))}
