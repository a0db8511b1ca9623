"""The typed tools agents call: schemas, roles, annotations, handlers and error codes."""

from ._catalog import catalog
from ._errors import CODES, HTTP_STATUS, ToolError, from_dispatch_error
from ._formats import FORMATS, anthropic_tool, mcp_tool, openai_tool, strict_schema
from ._names import SAFE_NAME, TOOL_NAMES, ToolNames, name_index, safe_name
from ._schemas import MAX_ERRORS
from ._tool import ROLES, Handler, Tool

__all__ = [
    "CODES",
    "FORMATS",
    "HTTP_STATUS",
    "MAX_ERRORS",
    "ROLES",
    "SAFE_NAME",
    "TOOL_NAMES",
    "Handler",
    "Tool",
    "ToolError",
    "ToolNames",
    "anthropic_tool",
    "catalog",
    "from_dispatch_error",
    "mcp_tool",
    "name_index",
    "openai_tool",
    "safe_name",
    "strict_schema",
]
