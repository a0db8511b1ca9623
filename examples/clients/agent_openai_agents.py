"""An OpenAI Agents SDK agent with the bridge's tools (`pip install openai-agents`).

    DISPATCH_AGENT_KEY=... OPENAI_API_KEY=... python examples/clients/agent_openai_agents.py

The bridge answers business and argument failures as `isError` tool results; the SDK hands
their text (the bridge's error envelope: code, message, details) to the model as the tool
output, so the model can attach the missing evidence or fix an argument and call again.
"""

from __future__ import annotations

import asyncio
import os

from agents import Agent, Runner
from agents.mcp import MCPServerStreamableHttp


async def main() -> None:
    url = os.environ.get("DISPATCH_BRIDGE_URL", "http://localhost:8080") + "/mcp"
    key = os.environ["DISPATCH_AGENT_KEY"]
    async with MCPServerStreamableHttp(
        {"url": url, "headers": {"Authorization": f"Bearer {key}"}},
        name="dispatch-bridge",
        cache_tools_list=True,  # the catalog changes only with a bridge release
    ) as bridge:
        agent = Agent(
            name="Dispatcher",
            instructions="You dispatch field technicians. Use the dispatch-bridge tools.",
            mcp_servers=[bridge],
            # OpenAI strict function calling: the SDK tightens each input schema itself.
            mcp_config={"convert_schemas_to_strict": True},
        )
        result = await Runner.run(agent, "Which tickets are ready to schedule?")
        print(result.final_output)


if __name__ == "__main__":
    asyncio.run(main())
