"""The typed tools agents call: schemas, roles, annotations, handlers and error codes."""

from ._catalog import catalog
from ._errors import CODES, HTTP_STATUS, ToolError, from_dispatch_error
from ._formats import FORMATS, anthropic_tool, mcp_tool, openai_tool, strict_schema
from ._schemas import MAX_ERRORS
from ._tool import ROLES, Handler, Tool

__all__ = [
    "CODES",
    "FORMATS",
    "HTTP_STATUS",
    "MAX_ERRORS",
    "ROLES",
    "Handler",
    "Tool",
    "ToolError",
    "anthropic_tool",
    "catalog",
    "from_dispatch_error",
    "mcp_tool",
    "openai_tool",
    "strict_schema",
]
