"""Tool names every model accepts.

OpenAI and Anthropic function names match `^[a-zA-Z0-9_-]{1,64}$` (no dots), and many MCP
clients pass MCP tool names straight into them, so a dotted name breaks those agents. The
catalog's canonical names are dotted (`tech.complete`: logs, metric labels and the timeline
use them); each tool also has a safe name (`tech_complete`). Calls accept both spellings, so
no spelling may point at two tools: `name_index` refuses such a set, which stops start-up.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

#: OpenAI function names (the strictest common consumer of tool names).
SAFE_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
#: What MCP tools/list calls a tool: its safe name (default) or its canonical dotted one.
ToolNames = Literal["safe", "dotted"]
TOOL_NAMES: tuple[ToolNames, ...] = ("safe", "dotted")


def safe_name(name: str) -> str:
    """`name` with its dots as underscores; ValueError when that is still not a safe name."""
    safe = name.replace(".", "_")
    if not SAFE_NAME.fullmatch(safe):
        raise ValueError(
            f"tool name {name[:80]!r} has no safe spelling: 1-64 letters, digits, _ or -"
        )
    return safe


def name_index(names: Iterable[str]) -> dict[str, str]:
    """Every spelling a call may use (canonical and safe) -> the canonical name it means.
    ValueError when one spelling would mean two tools (`a.b` and `a_b`, or a name twice)."""
    index: dict[str, str] = {}
    for name in names:
        if name in index.values():
            raise ValueError(f"tool names collide: {name!r} is in the catalog twice")
        for spelling in dict.fromkeys((name, safe_name(name))):
            owner = index.setdefault(spelling, name)
            if owner != name:
                raise ValueError(
                    f"tool names collide: {spelling!r} would name both {owner!r} and {name!r}"
                )
    return index
