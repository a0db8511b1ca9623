"""JSON logs: one line per request, every field present, no secret ever written."""

from __future__ import annotations

import base64
import logging
import uuid

import pytest

from telemetry import FIELDS
from tests.support.api import COMPLETE_TICKET, WINDOW, parsed_logs

from .conftest import Bridge

EVIDENCE_MARKER = b"inline-evidence-content-4c1f9e-do-not-log"


async def test_every_line_is_json_with_every_field_and_one_line_per_request(
    bridge: Bridge, log_lines: list[bytes]
) -> None:
    log_lines.clear()
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    await bridge.invoke("ticket.get", {"ticket_id": created.body["result"]["ticket"]["id"]})
    await bridge.request("GET", "/healthz", as_="")
    await bridge.api.request("GET", "/v1/templates")

    lines = parsed_logs(log_lines)
    assert lines
    for line in lines:
        assert all(name in line for name in FIELDS), set(FIELDS) - set(line)
    requests = [
        (line["service"], line["endpoint"]) for line in lines if line["event"] == "http_request"
    ]
    assert sorted(requests) == sorted(
        [
            ("bridge", "/v1/tools/{name}/invoke"),
            ("bridge", "/v1/tools/{name}/invoke"),
            ("bridge", "/healthz"),
            ("dispatch-api", "/v1/tickets"),
            ("dispatch-api", "/v1/tickets/{ticket_id}"),
            ("dispatch-api", "/v1/templates"),
        ]
    )
    attempts = [line for line in lines if line["event"] == "upstream_attempt"]
    assert [line["attempt"] for line in attempts] == [1, 1]


async def test_each_try_of_a_retried_call_logs_its_attempt(
    bridge: Bridge, log_lines: list[bytes]
) -> None:
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    tid = created.body["result"]["ticket"]["id"]
    bridge.proxy.drop_responses = 1
    log_lines.clear()

    reply = await bridge.invoke("ticket.schedule", {"ticket_id": tid, **WINDOW})

    attempts = [line for line in parsed_logs(log_lines) if line["event"] == "upstream_attempt"]
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [
        (1, "TransportFailure"),
        (2, "ok"),
    ]
    assert {a["request_id"] for a in attempts} == {reply.body["request_id"]}
    assert attempts[0]["level"] == "warning"


async def test_secrets_never_reach_any_log_line(
    bridge: Bridge,
    log_lines: list[bytes],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    api = bridge.api
    secrets = [
        *bridge.keys.values(),
        *api.tokens.values(),
        "Bearer not-a-real-token-9d1e",
        base64.b64encode(EVIDENCE_MARKER).decode(),
        EVIDENCE_MARKER.decode(),
        api.database_url,
    ]
    # Every bridge route, with and without valid keys.
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    tid = created.body["result"]["ticket"]["id"]
    for tool, args in (
        ("ticket.schedule", {"ticket_id": tid, **WINDOW}),
        ("ticket.dispatch", {"ticket_id": tid}),
        ("tech.arrive", {"ticket_id": tid}),
        ("tech.complete", {"ticket_id": tid}),
        (
            "evidence.attach",
            {
                "ticket_id": tid,
                "kind": "photo",
                "tag": "before",
                "content_type": "image/png",
                "content_base64": base64.b64encode(EVIDENCE_MARKER).decode(),
            },
        ),
        ("ticket.timeline", {"ticket_id": tid}),
        ("queue.view", {}),
        ("ticket.teleport", {}),
    ):
        await bridge.invoke(tool, args)
    await bridge.invoke(
        "ticket.get",
        {"ticket_id": tid},
        as_="",
        headers={"Authorization": "Bearer not-a-real-token-9d1e"},
    )
    for path in ("/v1/tools", "/v1/config", "/v1/ops/inflight", "/readyz", "/metrics", "/nope"):
        await bridge.request("GET", path)
    # Every dispatch-api route family, directly, as each principal and with a bad token.
    for who in api.tokens:
        await api.request("GET", f"/v1/tickets/{tid}", as_=who)
    await api.request(
        "GET", "/v1/tickets", as_="", headers={"Authorization": "Bearer not-a-real-token-9d1e"}
    )
    evidence = (await api.request("GET", f"/v1/tickets/{tid}/evidence")).body["items"][0]
    await api.request("GET", evidence["content_url"])
    await api.request("GET", f"/v1/tickets/{tid}/evidence/{evidence['id']}")
    await api.act(
        tid,
        "evidence",
        {
            "kind": "photo",
            "content_type": "text/html",
            "content_base64": base64.b64encode(EVIDENCE_MARKER).decode(),
        },
    )
    await api.request(
        "POST",
        "/v1/tickets",
        data=b"{not json " + EVIDENCE_MARKER,
        headers={"Content-Type": "application/json"},
    )
    await api.request("GET", f"/v1/tickets/{uuid.uuid4()}/timeline")
    for path in ("/metrics", "/readyz", "/openapi.json", "/v1/templates"):
        await api.request("GET", path)

    captured = capsys.readouterr()
    everything = "\n".join([b"".join(log_lines).decode(), caplog.text, captured.out, captured.err])
    assert len(log_lines) > 30
    leaked = [s[:12] + "…" for s in secrets if s in everything]
    assert not leaked, f"secrets in the logs: {leaked}"
