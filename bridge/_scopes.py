"""OAuth scopes of the tools: `dispatch:read` for tools that only read, `dispatch:write` for
every tool that changes something. A token must carry a tool's scope to see it in the tool
lists and to call it (on top of its role); an agent key carries every scope."""

from __future__ import annotations

from tools import Tool

from ._agents import Agent

READ = "dispatch:read"
WRITE = "dispatch:write"
SCOPES = (READ, WRITE)


def scope_of(tool: Tool) -> str:
    return READ if tool.read_only else WRITE


def permits(agent: Agent, tool: Tool) -> bool:
    """Whether the agent's credential covers `tool` (roles are checked separately)."""
    return agent.scopes is None or scope_of(tool) in agent.scopes


def step_up(agent: Agent, tool: Tool) -> str:
    """The scope value of an insufficient_scope challenge: what the token has of ours plus
    what the call needs, so a client that asks for exactly this loses nothing it had."""
    held = [s for s in SCOPES if agent.scopes is not None and s in agent.scopes]
    return " ".join(sorted({*held, scope_of(tool)}))
