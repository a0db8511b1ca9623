"""The tool list in the shapes agents expect: MCP, OpenAI function calling, Anthropic."""

from __future__ import annotations

from typing import Any

from ._names import ToolNames
from ._tool import Tool

#: Keywords OpenAI strict mode does not accept, and documentation-only ones.
#: OpenAI strict mode documents no string length limits (the bridge still enforces them when
#: it validates the arguments).
_STRICT_DROP = frozenset(
    {"$schema", "examples", "contentEncoding", "title", "minLength", "maxLength"}
)


def mcp_tool(tool: Tool, names: ToolNames = "safe") -> dict[str, Any]:
    """The MCP tool under its safe name (or its dotted one, `names="dotted"`). `title` is the
    canonical dotted name, which logs, metrics and the timeline use; the human title stays in
    `annotations.title`."""
    return {
        "name": tool.alias if names == "safe" else tool.name,
        "title": tool.name,
        "description": tool.description,
        "inputSchema": tool.input_schema,
        "outputSchema": tool.output_schema,
        "annotations": {
            "title": tool.title,
            "readOnlyHint": tool.read_only,
            "destructiveHint": tool.destructive,
            "idempotentHint": tool.idempotent,
            "openWorldHint": False,
        },
    }


def openai_tool(tool: Tool) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": tool.alias,
            "description": tool.description,
            "parameters": strict_schema(tool.input_schema),
            "strict": True,
        },
    }


def anthropic_tool(tool: Tool) -> dict[str, Any]:
    schema = {k: v for k, v in tool.input_schema.items() if k not in ("$schema", "examples")}
    return {"name": tool.alias, "description": tool.description, "input_schema": schema}


def strict_schema(schema: Any) -> Any:
    """OpenAI strict mode: every object closed and every property required (our optional
    properties already accept null, which is how strict mode spells 'optional')."""
    if isinstance(schema, list):
        return [strict_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict_member(k, v) for k, v in schema.items() if k not in _STRICT_DROP}
    if out.get("type") == "object" and "properties" in out:
        out["required"] = list(out["properties"])
        out["additionalProperties"] = False
    return out


def _strict_member(keyword: str, value: Any) -> Any:
    # Keys of these maps are property or definition names, not keywords: a property called
    # `title` must survive. enum and const hold instance values, not schemas.
    if keyword in ("properties", "patternProperties", "$defs") and isinstance(value, dict):
        return {name: strict_schema(sub) for name, sub in value.items()}
    if keyword in ("enum", "const"):
        return value
    return strict_schema(value)


FORMATS = {"mcp": mcp_tool, "openai": openai_tool, "anthropic": anthropic_tool}
