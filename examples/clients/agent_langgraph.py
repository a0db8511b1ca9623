"""A LangGraph agent with the bridge's tools, through langchain-mcp-adapters
(`pip install langchain-mcp-adapters langchain "langchain[openai]"`).

    DISPATCH_AGENT_KEY=... OPENAI_API_KEY=... python examples/clients/agent_langgraph.py

langchain-mcp-adapters 0.3.2 requires the official `mcp` package 1.x, so install it in an
environment of its own, not beside this project's test tools (which use `mcp` 2).
An `isError` result becomes a ToolMessage with the bridge's error envelope, so the model
can correct itself instead of the run failing.
"""

from __future__ import annotations

import asyncio
import os

from langchain.agents import create_agent
from langchain_mcp_adapters.client import MultiServerMCPClient


async def main() -> None:
    url = os.environ.get("DISPATCH_BRIDGE_URL", "http://localhost:8080") + "/mcp"
    key = os.environ["DISPATCH_AGENT_KEY"]
    client = MultiServerMCPClient(
        {
            "dispatch-bridge": {
                "transport": "streamable_http",
                "url": url,
                "headers": {"Authorization": f"Bearer {key}"},
            }
        }
    )
    tools = await client.get_tools()
    agent = create_agent(
        os.environ.get("DISPATCH_MODEL", "openai:gpt-5"),
        tools,
        system_prompt="You dispatch field technicians. Use the dispatch-bridge tools.",
    )
    result = await agent.ainvoke(
        {"messages": [{"role": "user", "content": "Which tickets are ready to schedule?"}]}
    )
    print(result["messages"][-1].content)


if __name__ == "__main__":
    asyncio.run(main())
