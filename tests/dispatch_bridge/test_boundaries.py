"""Only the composition root wires the services together: `bridge` and `dispatch_api` never
import each other (nor the root), and the settings toolkit imports neither."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN = {
    "bridge": {"dispatch_api", "dispatch_bridge"},
    "dispatch_api": {"bridge", "dispatch_bridge", "dispatch_client", "tools"},
    "settings": {"bridge", "dispatch_api", "dispatch_bridge", "telemetry"},
}


def _imports(path: Path) -> set[str]:
    """The top-level packages a module imports (relative imports stay inside its package)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_none_of_the_packages_it_must_not_know(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & FORBIDDEN[package])
        for path in sorted((ROOT / package).rglob("*.py"))
        if _imports(path) & FORBIDDEN[package]
    }

    assert offenders == {}
