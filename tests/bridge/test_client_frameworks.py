"""Agent stacks other than the official Python SDK drive the bridge's /mcp over real HTTP:
the official TypeScript SDK client (node, testkit/ts_client/) and two Python agent
frameworks' MCP clients, OpenAI Agents SDK and Pydantic AI, through their own tool objects
with no LLM. Each walks the same four steps: list the tools, a successful call, a business
failure the model can act on (`isError`, evidence_missing) and an invalid-arguments failure.

Tools are looked up by their canonical dotted name with `.` -> `_` allowed, so these tests
hold whether tools/list spells `tech.complete` or `tech_complete`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testkit.api import COMPLETE_TICKET, WINDOW
from tools import catalog

from .conftest import Bridge

TS_CLIENT = Path(__file__).resolve().parents[2] / "testkit" / "ts_client"
#: A whole TypeScript run (node start, handshake, list, three calls) takes about a second.
NODE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Call:
    """One step of the plan: a canonical tool name and its arguments."""

    tool: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Seen:
    """What one call gave the agent: whether the client flagged it as an error, and the JSON
    the model reads (the structured result, or the error envelope in the text block)."""

    is_error: bool
    body: dict[str, Any]


@dataclass(frozen=True)
class Session:
    """What a client listed (normalised names) and what each call of the plan gave back."""

    tools: set[str]
    calls: list[Seen]


Driver = Callable[[str, str, list[Call]], Awaitable[Session]]


def normalised(name: str) -> str:
    return name.replace(".", "_")


def pick(listed: list[str], canonical: str) -> str:
    """The name under which the client listed `canonical` (dotted or underscored)."""
    matches = [n for n in listed if normalised(n) == normalised(canonical)]
    assert len(matches) == 1, (canonical, listed)
    return matches[0]


# --- the drivers --------------------------------------------------------------------------


async def drive_typescript_sdk(url: str, key: str, plan: list[Call]) -> Session:
    node = shutil.which("node")
    script = TS_CLIENT / "drive.mjs"
    sdk = TS_CLIENT / "node_modules" / "@modelcontextprotocol" / "sdk"
    # CI must run this: a missing node or SDK is a broken set-up, never a skip.
    if node is None or not sdk.is_dir():
        pytest.fail("node and testkit/ts_client/node_modules are needed: run .ci/ensure-tools")
    process = await asyncio.create_subprocess_exec(
        node,
        str(script),
        url,
        json.dumps([{"tool": c.tool, "arguments": c.arguments} for c in plan]),
        env={**os.environ, "DISPATCH_AGENT_KEY": key},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), NODE_TIMEOUT_S)
    assert process.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["server"] == "dispatch-bridge"
    assert report["protocolVersion"] == "2025-11-25"
    calls = [
        Seen(c["isError"], c["structuredContent"] or json.loads(c["text"])) for c in report["calls"]
    ]
    for seen, raw in zip(calls, report["calls"], strict=True):
        # The text block always carries the same JSON the structured result does.
        assert json.loads(raw["text"]) == seen.body
    return Session({normalised(t["name"]) for t in report["tools"]}, calls)


async def drive_openai_agents(url: str, key: str, plan: list[Call]) -> Session:
    from agents import Agent, RunContextWrapper, set_tracing_disabled
    from agents.mcp import MCPServerStreamableHttp, MCPUtil
    from agents.tool import FunctionTool
    from agents.tool_context import ToolContext

    # The SDK's own tracing would export to OpenAI's platform: nothing may leave loopback.
    set_tracing_disabled(True)
    async with MCPServerStreamableHttp(
        {"url": url, "headers": {"Authorization": f"Bearer {key}"}}, name="dispatch-bridge"
    ) as server:
        # The FunctionTools an Agent would hand the model, strict schemas as OpenAI wants them.
        tools = await MCPUtil.get_function_tools(
            server, True, RunContextWrapper(context=None), Agent(name="dispatcher")
        )
        by_name = {t.name: t for t in tools if isinstance(t, FunctionTool)}
        calls = []
        for n, call in enumerate(plan):
            tool = by_name[pick(list(by_name), call.tool)]
            arguments = json.dumps(call.arguments)
            context = ToolContext(
                context=None,
                tool_name=tool.name,
                tool_call_id=f"call_{n}",
                tool_arguments=arguments,
            )
            output = await tool.on_invoke_tool(context, arguments)
            # The model reads the structured result on success and the text block on
            # failure; the SDK keeps no isError flag in what it returns, so read it there.
            text = output if isinstance(output, str) else output["text"]
            body = json.loads(text)
            calls.append(Seen(body.get("ok") is False, body))
    return Session({normalised(n) for n in by_name}, calls)


async def drive_pydantic_ai(url: str, key: str, plan: list[Call]) -> Session:
    from pydantic_ai import Agent
    from pydantic_ai.mcp import MCPToolset
    from pydantic_ai.messages import (
        ModelMessage,
        ModelRequest,
        ModelResponse,
        TextPart,
        ToolCallPart,
        ToolReturnPart,
    )
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    listed: list[str] = []

    def scripted_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        """A model that calls every step of the plan in its first turn, then stops."""
        if len(messages) > 1:
            return ModelResponse(parts=[TextPart("done")])
        listed.extend(t.name for t in info.function_tools)
        names = [t.name for t in info.function_tools]
        return ModelResponse(
            parts=[
                ToolCallPart(pick(names, c.tool), c.arguments, tool_call_id=f"call_{n}")
                for n, c in enumerate(plan)
            ]
        )

    toolset: MCPToolset[None] = MCPToolset(url, headers={"Authorization": f"Bearer {key}"})
    agent = Agent(FunctionModel(scripted_model), toolsets=[toolset])
    async with agent:
        run = await agent.run("Walk the plan.")

    # What the framework sends the model back for each call. Pydantic AI's default turns an
    # isError result into a retry (ModelRetry), answered with the error text so the model can
    # correct itself: a tool return whose outcome is not `success`.
    answers: dict[str, Seen] = {}
    for message in run.all_messages():
        for part in message.parts if isinstance(message, ModelRequest) else ():
            if not isinstance(part, ToolReturnPart):
                continue
            if part.outcome == "success":
                answers[part.tool_call_id] = Seen(False, part.model_response_object())
            else:
                text = part.model_response_str(wrap_if_error=False)
                answers[part.tool_call_id] = Seen(True, json.loads(text))
    return Session(
        {normalised(n) for n in listed}, [answers[f"call_{n}"] for n in range(len(plan))]
    )


DRIVERS: dict[str, Driver] = {
    "typescript-sdk": drive_typescript_sdk,
    "openai-agents": drive_openai_agents,
    "pydantic-ai": drive_pydantic_ai,
}


# --- the test -----------------------------------------------------------------------------


async def on_site_ticket(bridge: Bridge) -> str:
    """A water-leak ticket with a technician on site and none of its evidence attached."""
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    tid: str = created.body["result"]["ticket"]["id"]
    for tool, arguments in (
        ("ticket.schedule", WINDOW),
        ("ticket.dispatch", {}),
        ("tech.arrive", {}),
    ):
        reply = await bridge.invoke(tool, {"ticket_id": tid, **arguments})
        assert reply.status == 200, reply.body
    return tid


@pytest.mark.parametrize("client", list(DRIVERS))
async def test_each_client_lists_calls_and_reads_both_kinds_of_failure(
    bridge: Bridge, client: str
) -> None:
    tid = await on_site_ticket(bridge)
    plan = [
        Call("ticket.get", {"ticket_id": tid}),
        Call("tech.complete", {"ticket_id": tid}),
        Call("ticket.create", {**COMPLETE_TICKET, "priority": "P9"}),
    ]
    url = str(bridge.session._base_url) + "/mcp"

    session = await DRIVERS[client](url, bridge.keys["supervisor"], plan)

    assert session.tools == {normalised(t.name) for t in catalog() if t.allowed("supervisor")}
    got, refused, invalid = session.calls
    assert got.is_error is False
    assert got.body["ticket"]["id"] == tid
    assert got.body["ticket"]["state"] == "ON_SITE"
    assert refused.is_error is True
    assert refused.body["error"]["code"] == "evidence_missing"
    assert [
        (m["kind"], m["tag"]) for m in refused.body["error"]["details"]["missing_evidence"]
    ] == [
        ("photo", "before"),
        ("photo", "after"),
        ("signature", "customer"),
    ]
    assert invalid.is_error is True
    assert invalid.body["error"]["code"] == "invalid_arguments"
    assert {e["path"] for e in invalid.body["error"]["details"]["errors"]} == {"/priority"}
    # Neither failure changed anything: the ticket is still on site, and no ticket was created.
    events = await bridge.api.timeline(tid)
    assert [e["type"] for e in events][-1] == "completion_rejected"
    assert await bridge.api.count("SELECT count(*) FROM tickets") == 1
