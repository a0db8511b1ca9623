"""MCP clients and calls held for a person's approval, with the official SDK client where it
speaks the shape and raw JSON-RPC where it cannot (mcp 2.3.0 validates a 2025-11-25
tools/call answer as CallToolResult only, so a 2025-11-25 task is driven by hand).

Without Tasks a held call is an isError `approval_pending` result, as on REST; re-sent after
approval it is the replayed result. With Tasks (extension `io.modelcontextprotocol/tasks` in
2026-07-28, `params.task` in 2025-11-25) it is a task whose id is the approval's: working
until a person decides, then the call's result; tasks/cancel withdraws the request; another
agent's task is not found."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal, cast

import httpx2
import orjson
import pytest
from mcp import Client
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.client.streamable_http import streamable_http_client
from mcp.types import (
    CallToolResult,
    Request,
    RequestParams,
    RequestParamsMeta,
    Result,
    TextContent,
)
from pydantic import ConfigDict, Field

from testkit.api import Reply

from ._approval_steps import CANCEL, decide, ticket, ticket_state
from .conftest import Bridge

TASKS = "io.modelcontextprotocol/tasks"
LEGACY = "2025-11-25"
Mode = Literal["legacy", "auto"]


# ---- the SDK client, with and without the Tasks extension --------------------------------


class CreatedTask(Result):
    """A 2026-07-28 CreateTaskResult (`resultType: "task"`), as the extension claims it."""

    model_config = ConfigDict(extra="allow")
    result_type: Literal["task"] = Field(alias="resultType")
    task_id: str = Field(alias="taskId")
    status: str


async def _unresolved(result: CreatedTask, ctx: ClaimContext) -> CallToolResult:
    raise AssertionError("tests take the task themselves (allow_claimed=True)")


class TasksExtension(ClientExtension):
    identifier = TASKS

    def claims(self) -> Sequence[ResultClaim[Any]]:
        return [ResultClaim(result_type="task", model=CreatedTask, resolve=_unresolved)]


class Answer(Result):
    """Any result, every member kept (the test reads the wire shape, not a model)."""

    model_config = ConfigDict(extra="allow")


class TaskParams(RequestParams):
    task_id: str = Field(alias="taskId")


class GetTask(Request[TaskParams, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    params: TaskParams
    name_param = "taskId"  # Mcp-Name carries the task id (Tasks extension)


class CancelTask(Request[TaskParams, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    params: TaskParams
    name_param = "taskId"


@asynccontextmanager
async def sdk(bridge: Bridge, role: str, mode: Mode, tasks: bool) -> AsyncIterator[Client]:
    url = str(bridge.session._base_url) + "/mcp"
    headers = {"Authorization": f"Bearer {bridge.keys[role]}"}
    extensions = [TasksExtension()] if tasks else []
    async with (
        httpx2.AsyncClient(headers=headers) as http,
        Client(
            streamable_http_client(url, http_client=http), mode=mode, extensions=extensions
        ) as client,
    ):
        yield client


async def task_request(client: Client, method: str, task_id: str) -> dict[str, Any]:
    model = GetTask if method == "tasks/get" else CancelTask
    answer = await client.session.send_request(model(params=TaskParams(taskId=task_id)), Answer)
    return dict(answer.model_extra or {})


def text_json(result: CallToolResult) -> Any:
    [block] = result.content
    assert isinstance(block, TextContent)
    return orjson.loads(block.text)


def call_id(name: str) -> RequestParamsMeta:
    # RequestParamsMeta is an open TypedDict (PEP 728 extra_items), which mypy cannot read yet.
    return cast(RequestParamsMeta, {"dispatch-bridge.dev/toolCallId": name})


# ---- raw JSON-RPC for the 2025-11-25 task shapes ---------------------------------------


async def legacy(bridge: Bridge, method: str, params: dict[str, Any], as_: str) -> Reply:
    body = {"jsonrpc": "2.0", "id": 7, "method": method, "params": params}
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": LEGACY,
    }
    return await bridge.request("POST", "/mcp", data=orjson.dumps(body), headers=headers, as_=as_)


def rpc_result(reply: Reply) -> dict[str, Any]:
    assert reply.status == 200, reply.raw
    assert "error" not in reply.body, reply.body
    result: dict[str, Any] = reply.body["result"]
    return result


async def legacy_task(bridge: Bridge, tid: str, name: str) -> dict[str, Any]:
    reply = await legacy(
        bridge,
        "tools/call",
        {
            "name": "ticket_cancel",
            "arguments": {"ticket_id": tid, **CANCEL},
            "task": {"ttl": 60_000},
            "_meta": {"dispatch-bridge.dev/toolCallId": name},
        },
        as_="dispatcher",
    )
    created = rpc_result(reply)
    # What a host may hand the model at once: the approval_pending message.
    assert (
        "SAME tool_call_id" in created["_meta"]["io.modelcontextprotocol/model-immediate-response"]
    )
    task: dict[str, Any] = created["task"]
    return task


# ---- without Tasks: the isError result, as on REST ---------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_without_tasks_a_held_call_is_approval_pending_then_the_replayed_result(
    bridge: Bridge, mode: Mode
) -> None:
    tid = await ticket(bridge.api)
    args = {"ticket_id": tid, **CANCEL}
    async with sdk(bridge, "dispatcher", mode, tasks=False) as client:
        held = await client.call_tool("ticket_cancel", args, meta=call_id(f"mcp-{mode}"))
        error = text_json(held)["error"]
        assert held.is_error is True
        assert error["code"] == "approval_pending"
        assert error["details"]["outcome"] == "none"
        assert await ticket_state(bridge.api, tid) == "READY_TO_SCHEDULE"

        await decide(bridge.api, error["details"]["approval_id"], "approve")
        done = await client.call_tool("ticket_cancel", args, meta=call_id(f"mcp-{mode}"))

    assert done.is_error is False, text_json(done)
    assert done.structured_content is not None
    assert done.structured_content["ticket"]["state"] == "CANCELLED"
    assert done.meta == {"dispatch-bridge.dev/replayed": True}


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_without_tasks_a_denied_call_re_sent_is_approval_denied(
    bridge: Bridge, mode: Mode
) -> None:
    tid = await ticket(bridge.api)
    args = {"ticket_id": tid, **CANCEL}
    async with sdk(bridge, "dispatcher", mode, tasks=False) as client:
        held = await client.call_tool("ticket_cancel", args, meta=call_id("mcp-no"))
        approval_id = text_json(held)["error"]["details"]["approval_id"]
        await decide(bridge.api, approval_id, "deny", "keep the visit")
        refused = await client.call_tool("ticket_cancel", args, meta=call_id("mcp-no"))

    error = text_json(refused)["error"]
    assert refused.is_error is True
    assert error["code"] == "approval_denied"
    assert error["retryable"] is False
    assert (error["details"]["approval_status"], error["details"]["reason"]) == (
        "denied",
        "keep the visit",
    )
    assert await ticket_state(bridge.api, tid) == "READY_TO_SCHEDULE"


# ---- 2026-07-28: the Tasks extension, with the SDK --------------------------------------


async def _modern_task(client: Client, tid: str, name: str) -> CreatedTask:
    created = await client.session.call_tool(
        "ticket_cancel", {"ticket_id": tid, **CANCEL}, meta=call_id(name), allow_claimed=True
    )
    assert isinstance(created, CreatedTask), created
    return created


async def test_a_tasks_client_gets_a_task_that_completes_with_the_result_once_approved(
    bridge: Bridge,
) -> None:
    tid = await ticket(bridge.api)
    async with sdk(bridge, "dispatcher", "auto", tasks=True) as client:
        assert TASKS in (client.server_capabilities.extensions or {})
        created = await _modern_task(client, tid, "task-ok")
        working = await task_request(client, "tasks/get", created.task_id)
        assert await ticket_state(bridge.api, tid) == "READY_TO_SCHEDULE"

        decided = await decide(bridge.api, created.task_id, "approve")
        completed = await task_request(client, "tasks/get", created.task_id)

    assert created.status == "working"
    assert decided["id"] == created.task_id  # the task IS the approval
    assert working["status"] == "working"
    assert working["resultType"] == "complete"
    assert working["ttlMs"] is None
    assert 1 <= working["pollIntervalMs"] <= 30_000
    assert "result" not in working
    assert completed["status"] == "completed"
    result = completed["result"]
    assert result["isError"] is False
    assert result["structuredContent"]["ticket"]["state"] == "CANCELLED"
    assert result["_meta"] == {"dispatch-bridge.dev/replayed": True}
    assert await ticket_state(bridge.api, tid) == "CANCELLED"


async def test_a_denied_task_completes_with_the_approval_denied_tool_result(
    bridge: Bridge,
) -> None:
    tid = await ticket(bridge.api)
    async with sdk(bridge, "dispatcher", "auto", tasks=True) as client:
        created = await _modern_task(client, tid, "task-no")
        await decide(bridge.api, created.task_id, "deny", "not without the customer")
        ended = await task_request(client, "tasks/get", created.task_id)

    # 2026-07-28: `failed` is only for JSON-RPC errors; a tool error completes the task.
    assert ended["status"] == "completed"
    assert ended["result"]["isError"] is True
    error = orjson.loads(ended["result"]["content"][0]["text"])["error"]
    assert error["code"] == "approval_denied"
    assert error["details"]["reason"] == "not without the customer"
    assert "not without the customer" in ended["statusMessage"]
    assert await ticket_state(bridge.api, tid) == "READY_TO_SCHEDULE"


async def test_tasks_cancel_withdraws_the_approval_request_and_nothing_runs(
    bridge: Bridge,
) -> None:
    tid = await ticket(bridge.api)
    async with sdk(bridge, "dispatcher", "auto", tasks=True) as client:
        created = await _modern_task(client, tid, "task-cancel")
        acknowledged = await task_request(client, "tasks/cancel", created.task_id)
        ended = await task_request(client, "tasks/get", created.task_id)

    assert acknowledged == {"resultType": "complete"}
    assert ended["status"] == "cancelled"
    seen = await bridge.api.request("GET", f"/v1/approvals/{created.task_id}")
    assert seen.body["approval"]["status"] == "withdrawn"
    assert await ticket_state(bridge.api, tid) == "READY_TO_SCHEDULE"


async def test_another_agents_task_is_not_found_over_both_revisions(bridge: Bridge) -> None:
    tid = await ticket(bridge.api)
    async with sdk(bridge, "dispatcher", "auto", tasks=True) as client:
        created = await _modern_task(client, tid, "task-theirs")
    async with sdk(bridge, "supervisor", "auto", tasks=True) as other:
        for method in ("tasks/get", "tasks/cancel"):
            with pytest.raises(Exception, match="Task not found") as caught:
                await task_request(other, method, created.task_id)
            assert getattr(caught.value, "code", None) == -32602
    for method in ("tasks/get", "tasks/result", "tasks/cancel"):
        reply = await legacy(bridge, method, {"taskId": created.task_id}, as_="supervisor")
        assert reply.body["error"]["code"] == -32602, method
        assert "result" not in reply.body

    seen = await bridge.api.request("GET", f"/v1/approvals/{created.task_id}")
    assert seen.body["approval"]["status"] == "pending"


async def test_a_tasks_request_without_the_extension_declared_is_32021(bridge: Bridge) -> None:
    tid = await ticket(bridge.api)
    async with sdk(bridge, "dispatcher", "auto", tasks=True) as client:
        created = await _modern_task(client, tid, "task-undeclared")
    async with sdk(bridge, "dispatcher", "auto", tasks=False) as plain:
        with pytest.raises(Exception, match="Missing required client capability") as caught:
            await task_request(plain, "tasks/get", created.task_id)

    assert getattr(caught.value, "code", None) == -32021


# ---- 2025-11-25: task-augmented calls, raw ------------------------------------------------


async def test_a_2025_11_25_task_is_working_then_tasks_result_is_the_replayed_result(
    bridge: Bridge,
) -> None:
    tid = await ticket(bridge.api)
    task = await legacy_task(bridge, tid, "legacy-ok")
    working = rpc_result(await legacy(bridge, "tasks/get", task, as_="dispatcher"))

    await decide(bridge.api, task["taskId"], "approve")
    completed = rpc_result(await legacy(bridge, "tasks/get", task, as_="dispatcher"))
    result = rpc_result(await legacy(bridge, "tasks/result", task, as_="dispatcher"))

    assert task["status"] == "working"
    assert task["ttl"] is None
    assert (working["taskId"], working["status"]) == (task["taskId"], "working")
    assert working["pollInterval"] >= 1
    assert completed["status"] == "completed"
    assert "result" not in completed  # 2025-11-25: the result comes from tasks/result
    assert result["isError"] is False
    assert result["structuredContent"]["ticket"]["state"] == "CANCELLED"
    assert result["_meta"] == {
        "dispatch-bridge.dev/replayed": True,
        "io.modelcontextprotocol/related-task": {"taskId": task["taskId"]},
    }


async def test_a_2025_11_25_denied_task_fails_and_its_result_is_approval_denied(
    bridge: Bridge,
) -> None:
    tid = await ticket(bridge.api)
    task = await legacy_task(bridge, tid, "legacy-no")

    await decide(bridge.api, task["taskId"], "deny", "wrong ticket")
    failed = rpc_result(await legacy(bridge, "tasks/get", task, as_="dispatcher"))
    result = rpc_result(await legacy(bridge, "tasks/result", task, as_="dispatcher"))

    # 2025-11-25: a tool result with isError ends the task failed.
    assert failed["status"] == "failed"
    assert "wrong ticket" in failed["statusMessage"]
    assert result["isError"] is True
    assert orjson.loads(result["content"][0]["text"])["error"]["code"] == "approval_denied"
    assert await ticket_state(bridge.api, tid) == "READY_TO_SCHEDULE"


async def test_a_2025_11_25_cancel_ends_the_task_cancelled_and_a_second_cancel_is_32602(
    bridge: Bridge,
) -> None:
    tid = await ticket(bridge.api)
    task = await legacy_task(bridge, tid, "legacy-cancel")

    cancelled = rpc_result(await legacy(bridge, "tasks/cancel", task, as_="dispatcher"))
    again = await legacy(bridge, "tasks/cancel", task, as_="dispatcher")

    assert (cancelled["taskId"], cancelled["status"]) == (task["taskId"], "cancelled")
    assert again.body["error"]["code"] == -32602
    assert await ticket_state(bridge.api, tid) == "READY_TO_SCHEDULE"


async def test_a_2025_11_25_task_on_a_tool_without_task_support_is_32601(
    bridge: Bridge,
) -> None:
    tid = await ticket(bridge.api)

    reply = await legacy(
        bridge,
        "tools/call",
        {"name": "ticket_get", "arguments": {"ticket_id": tid}, "task": {}},
        as_="dispatcher",
    )

    assert reply.body["error"]["code"] == -32601
    assert bridge.proxy.requests == 0


async def test_a_2025_11_25_tasks_result_waits_for_the_decision_then_gives_the_result(
    bridge: Bridge,
) -> None:
    tid = await ticket(bridge.api)
    task = await legacy_task(bridge, tid, "legacy-wait")

    before = bridge.proxy.requests
    waiting = asyncio.create_task(legacy(bridge, "tasks/result", task, as_="dispatcher"))
    async with asyncio.timeout(10):  # until the bridge has read the approval still pending
        # A count the proxy keeps: there is no event to await.
        while bridge.proxy.requests == before:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    await decide(bridge.api, task["taskId"], "approve")
    result = rpc_result(await asyncio.wait_for(waiting, timeout=10))

    assert result["isError"] is False
    assert result["structuredContent"]["ticket"]["state"] == "CANCELLED"
    assert result["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": task["taskId"]}


@pytest.mark.parametrize("task_id", [123, None, "x" * 10_000, "../../v1/tickets", "0" * 36])
async def test_a_hostile_task_id_is_not_found_small_and_never_reaches_dispatch_api(
    bridge: Bridge, task_id: Any
) -> None:
    before = bridge.proxy.requests

    reply = await legacy(bridge, "tasks/get", {"taskId": task_id}, as_="dispatcher")

    assert reply.status == 200
    assert reply.body["error"]["code"] == -32602
    assert len(reply.raw) < 1024
    assert bridge.proxy.requests == before


@pytest.mark.parametrize("bridge_overrides", [{"rate_limit_per_s": 0.01, "rate_limit_burst": 2}])
async def test_polling_tasks_spends_the_agent_keys_rate_limit_like_any_call(
    bridge: Bridge,
) -> None:
    """An agent cannot poll tasks/get faster than its key may call tools: over the limit it
    is told to wait, and dispatch-api is not asked."""
    first = await legacy(bridge, "tasks/get", {"taskId": str(uuid.uuid4())}, as_="dispatcher")
    second = await legacy(bridge, "tasks/get", {"taskId": str(uuid.uuid4())}, as_="dispatcher")
    before = bridge.proxy.requests

    third = await legacy(bridge, "tasks/get", {"taskId": str(uuid.uuid4())}, as_="dispatcher")

    assert [r.body["error"]["code"] for r in (first, second)] == [-32602, -32602]
    assert third.status == 200
    assert third.body["error"]["code"] == -32029
    assert third.body["error"]["data"]["code"] == "rate_limited"
    assert third.body["error"]["data"]["retry_after_ms"] > 0
    assert bridge.proxy.requests == before
