"""The tool list in the shapes agents expect: MCP, OpenAI function calling (strict mode) and
Anthropic tool use."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from schemas import Validator
from tools import FORMATS, Tool, anthropic_tool, catalog, mcp_tool, openai_tool, strict_schema

TOOLS = catalog()
BY_NAME = {t.name: t for t in TOOLS}
OPENAI_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
#: Keywords OpenAI strict mode refuses, or that only document.
NOT_IN_STRICT = frozenset({"examples", "$schema", "title", "contentEncoding"})
READ_ONLY = {
    "ticket.get",
    "ticket.timeline",
    "queue.view",
    "technician.list",
    "sla.status",
    "approval.status",
}


def _name(tool: Tool) -> str:
    return tool.name


each_tool = pytest.mark.parametrize("tool", TOOLS, ids=_name)


def _subschemas(schema: Any, where: str = "$") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema nested in `schema`, with where it sits (property names are not schemas)."""
    if not isinstance(schema, dict):
        return
    yield where, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _subschemas(sub, f"{where}.properties.{name}")
    for keyword in ("items", "additionalProperties", "not"):
        yield from _subschemas(schema.get(keyword), f"{where}.{keyword}")
    for keyword in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for i, sub in enumerate(schema.get(keyword, [])):
            yield from _subschemas(sub, f"{where}.{keyword}[{i}]")
    for name, sub in schema.get("$defs", {}).items():
        yield from _subschemas(sub, f"{where}.$defs.{name}")


def _is_object(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    return kind == "object" or (isinstance(kind, list) and "object" in kind)


def _accepts_null(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    typed = kind == "null" or (isinstance(kind, list) and "null" in kind)
    return typed and ("enum" not in schema or None in schema["enum"])


# ---- OpenAI -----------------------------------------------------------------------------


@each_tool
def test_openai_export_is_a_strict_function_under_the_alias(tool: Tool) -> None:
    exported = openai_tool(tool)

    assert set(exported) == {"type", "function"}
    assert exported["type"] == "function"
    function = exported["function"]
    assert function["name"] == tool.alias
    assert OPENAI_NAME.fullmatch(function["name"])
    assert function["strict"] is True
    assert function["description"] == tool.description
    assert function["parameters"]["type"] == "object"


@each_tool
def test_openai_parameters_satisfy_strict_mode_at_every_depth(tool: Tool) -> None:
    parameters = openai_tool(tool)["function"]["parameters"]
    violations = []
    for where, schema in _subschemas(parameters):
        dropped = NOT_IN_STRICT & set(schema)
        if dropped:
            violations.append(f"{where}: has {sorted(dropped)}")
        if _is_object(schema):
            if schema.get("additionalProperties") is not False:
                violations.append(f"{where}: additionalProperties is not false")
            required = schema.get("required", [])
            if sorted(required) != sorted(schema.get("properties", {})):
                violations.append(f"{where}: required {required} is not every property")
            if len(required) != len(set(required)):
                violations.append(f"{where}: required {required} has duplicates")

    assert violations == []


@each_tool
def test_openai_parameters_spell_optional_as_nullable(tool: Tool) -> None:
    """Strict mode requires every property, so an optional one must accept null."""
    required = set(tool.input_schema.get("required", []))
    properties = openai_tool(tool)["function"]["parameters"]["properties"]

    assert [n for n, p in properties.items() if n not in required and not _accepts_null(p)] == []


@each_tool
def test_every_example_with_nulls_for_the_omitted_fields_fits_the_strict_parameters(
    tool: Tool,
) -> None:
    """What a strict-mode model sends (every field, null for 'not given') is accepted, by
    the exported parameters and by the tool itself."""
    parameters = openai_tool(tool)["function"]["parameters"]
    validator = Validator(parameters)
    for example in tool.input_schema["examples"]:
        call = {name: example.get(name) for name in parameters["properties"]}

        assert [e.message for e in validator.iter_errors(call)] == []
        tool.validator.validate(call)


@each_tool
def test_exporting_leaves_the_tool_schema_untouched(tool: Tool) -> None:
    before = copy.deepcopy(tool.input_schema)

    openai_tool(tool)
    anthropic_tool(tool)
    mcp_tool(tool)

    assert tool.input_schema == before


def test_strict_schema_closes_nested_objects_and_requires_every_property() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "t",
        "type": "object",
        "properties": {
            "title": {"type": "string", "title": "a property named title stays"},
            "window": {
                "type": "object",
                "properties": {"start": {"type": ["string", "null"]}},
                "examples": [{"start": None}],
            },
            "blob": {"type": ["string", "null"], "contentEncoding": "base64"},
        },
        "required": ["title"],
        "examples": [{"title": "x"}],
    }

    assert strict_schema(schema) == {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "window": {
                "type": "object",
                "properties": {"start": {"type": ["string", "null"]}},
                "required": ["start"],
                "additionalProperties": False,
            },
            "blob": {"type": ["string", "null"]},
        },
        "required": ["title", "window", "blob"],
        "additionalProperties": False,
    }


# ---- Anthropic --------------------------------------------------------------------------


@each_tool
def test_anthropic_export_has_name_description_and_input_schema(tool: Tool) -> None:
    exported = anthropic_tool(tool)

    assert set(exported) == {"name", "description", "input_schema"}
    assert exported["name"] == tool.alias
    assert exported["description"] == tool.description
    schema = exported["input_schema"]
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert schema["properties"] == tool.input_schema["properties"]
    assert schema.get("required", []) == tool.input_schema.get("required", [])
    assert {"$schema", "examples"} & set(schema) == set()


# ---- MCP --------------------------------------------------------------------------------


@each_tool
def test_mcp_export_has_names_schemas_and_boolean_hints(tool: Tool) -> None:
    exported = mcp_tool(tool)

    assert set(exported) == {
        "name",
        "title",
        "description",
        "inputSchema",
        "outputSchema",
        "annotations",
    }
    assert exported["name"] == tool.alias
    assert OPENAI_NAME.fullmatch(exported["name"])
    assert exported["title"] == tool.name  # the canonical dotted name
    assert exported["description"] == tool.description
    assert exported["inputSchema"] == tool.input_schema
    assert exported["outputSchema"] == tool.output_schema
    hints = exported["annotations"]
    for hint in ("readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint"):
        assert type(hints[hint]) is bool, hint
    assert hints["title"] == tool.title  # the human title
    assert hints["openWorldHint"] is False
    json.dumps(exported)


@each_tool
def test_mcp_export_with_dotted_names_differs_only_in_the_name(tool: Tool) -> None:
    safe, dotted = mcp_tool(tool), mcp_tool(tool, "dotted")

    assert dotted["name"] == tool.name
    assert {**dotted, "name": safe["name"]} == safe


@each_tool
def test_mcp_input_and_output_schemas_are_objects_at_the_root(tool: Tool) -> None:
    """The MCP schema (2025-06-18, 2025-11-25) types both as `type: "object"` at the root;
    SDK clients that parse tools/list strictly refuse anything else."""
    exported = mcp_tool(tool)

    assert exported["inputSchema"]["type"] == "object"
    assert exported["outputSchema"]["type"] == "object"


def test_reading_a_ticket_is_read_only_and_idempotent() -> None:
    hints = mcp_tool(BY_NAME["ticket.get"])["annotations"]

    assert hints["readOnlyHint"] is True
    assert hints["destructiveHint"] is False
    assert hints["idempotentHint"] is True


def test_cancelling_a_ticket_is_destructive() -> None:
    hints = mcp_tool(BY_NAME["ticket.cancel"])["annotations"]

    assert hints["destructiveHint"] is True
    assert hints["readOnlyHint"] is False


def test_only_the_reading_tools_are_read_only_and_only_cancel_is_destructive() -> None:
    """destructiveHint defaults to true in MCP, so every other tool must say false."""
    hints = {t.name: mcp_tool(t)["annotations"] for t in TOOLS}

    assert {n for n, h in hints.items() if h["readOnlyHint"]} == READ_ONLY
    assert {n for n, h in hints.items() if h["destructiveHint"]} == {"ticket.cancel"}
    assert {n for n in READ_ONLY if not hints[n]["idempotentHint"]} == set()


def test_the_formats_are_mcp_openai_and_anthropic() -> None:
    assert set(FORMATS) == {"mcp", "openai", "anthropic"}
    assert (FORMATS["mcp"], FORMATS["openai"], FORMATS["anthropic"]) == (
        mcp_tool,
        openai_tool,
        anthropic_tool,
    )
