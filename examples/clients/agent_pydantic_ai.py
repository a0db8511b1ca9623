"""A Pydantic AI agent with the bridge's tools (`pip install "pydantic-ai-slim[mcp,openai]"`).

    DISPATCH_AGENT_KEY=... OPENAI_API_KEY=... python examples/clients/agent_pydantic_ai.py

`MCPToolset` (Pydantic AI 2; `MCPServerStreamableHTTP` of version 1 is gone) picks the
Streamable HTTP transport from the URL. An `isError` result reaches the model as a retry
prompt carrying the bridge's error envelope, so the model can correct itself.
"""

from __future__ import annotations

import asyncio
import os

from pydantic_ai import Agent
from pydantic_ai.mcp import MCPToolset


async def main() -> None:
    url = os.environ.get("DISPATCH_BRIDGE_URL", "http://localhost:8080") + "/mcp"
    key = os.environ["DISPATCH_AGENT_KEY"]
    bridge: MCPToolset[None] = MCPToolset(url, headers={"Authorization": f"Bearer {key}"})
    agent = Agent(
        os.environ.get("DISPATCH_MODEL", "openai:gpt-5"),
        instructions="You dispatch field technicians. Use the dispatch-bridge tools.",
        toolsets=[bridge],
    )
    async with agent:  # one connection for the whole run
        result = await agent.run("Which tickets are ready to schedule?")
    print(result.output)


if __name__ == "__main__":
    asyncio.run(main())
