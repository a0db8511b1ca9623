"""Bad input gets a precise 4xx problem+json and writes nothing."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testkit.api import COMPLETE_TICKET, WINDOW, Api, Reply

PROBLEM_FIELDS = {"type", "title", "status", "detail", "code"}

#: Every POST route of one ticket, with a body it would accept.
TICKET_POST_ROUTES: dict[str, dict[str, Any]] = {
    "schedule": WINDOW,
    "dispatch": {},
    "arrive": {},
    "complete": {},
    "hold": {"cause": "customer", "reason": "customer away"},
    "resume": {},
    "cancel": {"reason": "duplicate"},
    "contact-attempts": {"channel": "phone", "outcome": "no_answer"},
    "escalations": {"level": "supervisor", "reason": "no answer twice"},
    "mitigations": {"action": "water shut off"},
    "evidence": {
        "kind": "note",
        "content_type": "text/plain",
        "content_base64": base64.b64encode(b"note").decode(),
    },
}


def assert_problem(reply: Reply, status: int, code: str) -> dict[str, Any]:
    """The reply is an RFC 9457 problem of `status` and `code`; returns its body."""
    assert reply.status == status, (reply.status, reply.body)
    assert reply.content_type == "application/problem+json", reply.headers
    body: dict[str, Any] = reply.body
    assert body.keys() >= PROBLEM_FIELDS, body
    assert body["status"] == status
    assert body["code"] == code, body
    assert body["type"].endswith("/" + code)
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body


async def written(api: Api) -> tuple[int, int, int, int]:
    """Rows in every table a request can write: tickets, events, keys, evidence."""
    return (
        await api.count("SELECT count(*) FROM tickets"),
        await api.count("SELECT count(*) FROM timeline_events"),
        await api.count("SELECT count(*) FROM idempotency_keys"),
        await api.count("SELECT count(*) FROM evidence"),
    )


def error_paths(body: dict[str, Any]) -> set[str]:
    return {e["path"] for e in body["errors"]}


JSON_HEADERS = {"Content-Type": "application/json"}


async def test_malformed_json_is_400_invalid_json_and_writes_nothing(api: Api) -> None:
    ticket = await api.create_ticket()
    before = await written(api)

    for method, path in (
        ("POST", "/v1/tickets"),
        ("PATCH", f"/v1/tickets/{ticket['id']}"),
        ("POST", f"/v1/tickets/{ticket['id']}/cancel"),
    ):
        reply = await api.request(
            method, path, data='{"customer_name": "Ada", ', headers=JSON_HEADERS
        )
        assert_problem(reply, 400, "invalid_json")

    assert await written(api) == before


async def test_a_body_that_is_not_json_is_415_unsupported_media_type(api: Api) -> None:
    ticket = await api.create_ticket()
    before = await written(api)

    form = await api.request(
        "POST",
        "/v1/tickets",
        data="customer_name=Ada",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert assert_problem(form, 415, "unsupported_media_type")["accepted"] == ["application/json"]
    text = await api.request(
        "POST", f"/v1/tickets/{ticket['id']}/cancel", data='{"reason": "x"}'
    )  # a str body goes as text/plain
    assert_problem(text, 415, "unsupported_media_type")

    assert await written(api) == before


async def test_a_body_larger_than_max_json_bytes_is_413_payload_too_large(api: Api) -> None:
    ticket = await api.create_ticket()
    before = await written(api)
    limit = 64 * 1024
    huge = orjson.dumps({**COMPLETE_TICKET, "description": "x" * limit})

    reply = await api.request("POST", "/v1/tickets", data=huge, headers=JSON_HEADERS)
    assert assert_problem(reply, 413, "payload_too_large")["limit_bytes"] == limit
    reply = await api.request(
        "PATCH", f"/v1/tickets/{ticket['id']}", data=huge, headers=JSON_HEADERS
    )
    assert_problem(reply, 413, "payload_too_large")

    assert await written(api) == before


async def test_a_chunked_body_without_content_length_is_cut_off_at_the_limit(api: Api) -> None:
    before = await written(api)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"description": "'
        for _ in range(80):
            yield b"x" * 1024
        yield b'"}'

    headers = {
        "Authorization": f"Bearer {api.tokens['supervisor']}",
        "Idempotency-Key": str(uuid.uuid4()),
        **JSON_HEADERS,
    }
    async with api.session.post("/v1/tickets", data=chunks(), headers=headers) as resp:
        sent = resp.request_info.headers
        assert sent.get("Transfer-Encoding") == "chunked"
        assert "Content-Length" not in sent
        body = await resp.read()
        reply = Reply(resp.status, resp.headers, orjson.loads(body), body)
    assert_problem(reply, 413, "payload_too_large")

    assert await written(api) == before


async def test_unknown_fields_on_create_are_422_validation_failed_naming_them(api: Api) -> None:
    reply = await api.request("POST", "/v1/tickets", json={**COMPLETE_TICKET, "state": "DONE"})

    body = assert_problem(reply, 422, "validation_failed")
    assert len(body["errors"]) == 1
    assert body["errors"][0]["path"] == "/state"
    assert body["errors"][0]["message"].startswith("unknown field; allowed: contact_email,")
    assert await written(api) == (0, 0, 0, 0)


async def test_unknown_fields_on_patch_are_422_and_leave_the_ticket_as_it_was(api: Api) -> None:
    ticket = await api.create_ticket()
    before = await written(api)

    reply = await api.request(
        "PATCH",
        f"/v1/tickets/{ticket['id']}",
        json={"customer_name": "Grace", "technician_id": "tech-9"},
    )

    body = assert_problem(reply, 422, "validation_failed")
    assert error_paths(body) == {"/technician_id"}
    assert "site_address" in body["errors"][0]["message"]  # the allowed fields are listed
    assert await written(api) == before
    now = (await api.request("GET", f"/v1/tickets/{ticket['id']}")).body
    assert now["customer_name"] == "Ada Lovelace"
    assert now["last_event_seq"] == 1


async def test_an_empty_patch_is_422(api: Api) -> None:
    ticket = await api.create_ticket()
    before = await written(api)

    reply = await api.request("PATCH", f"/v1/tickets/{ticket['id']}", json={})

    assert error_paths(assert_problem(reply, 422, "validation_failed")) == {""}
    assert await written(api) == before


async def test_wrong_types_are_422_with_the_path_of_every_bad_field(api: Api) -> None:
    reply = await api.request(
        "POST",
        "/v1/tickets",
        json={**COMPLETE_TICKET, "priority": 1, "customer_name": ["Ada"], "contact_email": "no"},
    )

    body = assert_problem(reply, 422, "validation_failed")
    assert error_paths(body) == {"/priority", "/customer_name", "/contact_email"}
    assert await written(api) == (0, 0, 0, 0)

    for not_an_object in ([COMPLETE_TICKET], "ticket", 7, None):
        reply = await api.request(
            "POST", "/v1/tickets", data=json.dumps(not_an_object), headers=JSON_HEADERS
        )
        assert error_paths(assert_problem(reply, 422, "validation_failed")) == {""}
    assert await written(api) == (0, 0, 0, 0)


async def test_a_path_id_that_is_not_a_uuid_is_400_invalid_id(api: Api) -> None:
    ticket = await api.create_ticket()
    before = await written(api)

    for method, path, body in (
        ("GET", "/v1/tickets/42", None),
        ("PATCH", "/v1/tickets/42", {"customer_name": "Grace"}),
        ("POST", "/v1/tickets/not-a-ticket/cancel", {"reason": "x"}),
        ("GET", "/v1/tickets/42/timeline", None),
        ("GET", "/v1/tickets/42/evidence", None),
    ):
        reply = await api.request(method, path, json=body)
        assert assert_problem(reply, 400, "invalid_id")["parameter"] == "ticket_id", path

    reply = await api.request("GET", f"/v1/tickets/{ticket['id']}/evidence/nope")
    assert assert_problem(reply, 400, "invalid_id")["parameter"] == "evidence_id"
    assert await written(api) == before


async def test_an_unknown_ticket_is_404_ticket_not_found_and_writes_nothing(api: Api) -> None:
    await api.create_ticket()
    before = await written(api)
    missing = uuid.uuid4()

    for method, path, body in (
        ("GET", f"/v1/tickets/{missing}", None),
        ("PATCH", f"/v1/tickets/{missing}", {"customer_name": "Grace"}),
        ("POST", f"/v1/tickets/{missing}/cancel", {"reason": "x"}),
        ("POST", f"/v1/tickets/{missing}/schedule", WINDOW),
        ("POST", f"/v1/tickets/{missing}/evidence", TICKET_POST_ROUTES["evidence"]),
        ("GET", f"/v1/tickets/{missing}/timeline", None),
        ("GET", f"/v1/tickets/{missing}/evidence", None),
    ):
        reply = await api.request(method, path, json=body)
        assert_problem(reply, 404, "ticket_not_found")

    assert await written(api) == before


async def test_an_unknown_route_is_404_route_not_found(api: Api) -> None:
    for path, as_ in (("/v1/nothing-here", "supervisor"), ("/nothing-here", "")):
        reply = await api.request("GET", path, as_=as_)
        assert assert_problem(reply, 404, "route_not_found")["detail"] == f"no route GET {path}"
    ticket = await api.create_ticket()
    reply = await api.act(ticket["id"], "teleport", {})
    assert_problem(reply, 404, "route_not_found")


async def test_a_wrong_method_is_405_with_an_allow_header(api: Api) -> None:
    ticket = await api.create_ticket()
    before = await written(api)

    for method, path, allowed in (
        ("DELETE", f"/v1/tickets/{ticket['id']}", {"GET", "HEAD", "PATCH"}),
        ("PUT", "/v1/tickets", {"GET", "HEAD", "POST"}),
        ("GET", f"/v1/tickets/{ticket['id']}/cancel", {"POST"}),
        ("POST", "/v1/templates", {"GET", "HEAD"}),
    ):
        reply = await api.request(method, path)
        body = assert_problem(reply, 405, "method_not_allowed")
        assert set(reply.headers["Allow"].split(", ")) == allowed, path
        assert set(body["allowed_methods"]) == allowed

    assert await written(api) == before


async def test_every_mutating_route_without_idempotency_key_is_400(api: Api) -> None:
    ticket = await api.create_ticket()
    before = await written(api)
    routes: list[tuple[str, str, Any]] = [
        ("POST", "/v1/tickets", COMPLETE_TICKET),
        ("PATCH", f"/v1/tickets/{ticket['id']}", {"description": "dripping"}),
    ]
    routes += [
        ("POST", f"/v1/tickets/{ticket['id']}/{action}", body)
        for action, body in TICKET_POST_ROUTES.items()
    ]

    for method, path, body in routes:
        reply = await api.request(method, path, json=body, key=None)
        assert_problem(reply, 400, "idempotency_key_missing")

    assert await written(api) == before


async def test_unsafe_id_headers_are_400_invalid_header_and_write_nothing(api: Api) -> None:
    cases = [
        ("X-Correlation-ID", "has spaces"),
        ("X-Correlation-ID", "c" * 129),
        ("X-Correlation-ID", "semi;colon"),
        ("X-Request-ID", "has spaces"),
        ("X-Request-ID", "r" * 129),
        ("X-Request-ID", "caf\u00e9".encode().decode("latin-1")),
        ("Idempotency-Key", "tab\tinside"),
        ("Idempotency-Key", "space inside"),
        ("Idempotency-Key", "k" * 256),
    ]

    for header, value in cases:
        reply = await api.request(
            "POST", "/v1/tickets", json=COMPLETE_TICKET, headers={header: value}
        )
        body = assert_problem(reply, 400, "invalid_header")
        assert body["header"] == header, (header, value)
        echoed = reply.headers["X-Correlation-ID"]
        assert echoed != value
        uuid.UUID(echoed)  # an unsafe id is replaced by a minted one, never echoed
        assert reply.headers["X-Request-ID"] != value

    assert await written(api) == (0, 0, 0, 0)


async def test_the_longest_safe_ids_are_accepted(api: Api) -> None:
    reply = await api.request(
        "POST",
        "/v1/tickets",
        json=COMPLETE_TICKET,
        as_="gateway",
        key="k" * 255,
        headers={"X-Correlation-ID": "c" * 128, "X-Request-ID": "r" * 128},
    )

    assert reply.status == 201, reply.body
    assert reply.body["event"]["request_id"] == "r" * 128
    assert reply.body["event"]["correlation_id"] == "c" * 128


async def test_an_unknown_incident_type_is_422_unknown_incident_type(api: Api) -> None:
    ticket = await api.create_ticket()
    before = await written(api)

    created = await api.request(
        "POST", "/v1/tickets", json={**COMPLETE_TICKET, "incident_type": "alien_invasion"}
    )
    patched = await api.request(
        "PATCH", f"/v1/tickets/{ticket['id']}", json={"incident_type": "alien_invasion"}
    )

    for reply in (created, patched):
        body = assert_problem(reply, 422, "unknown_incident_type")
        assert error_paths(body) == {"/incident_type"}
        assert {"water_leak", "no_heat", "lockout", "electrical_hazard"} <= set(
            body["allowed_values"]
        )
    assert await written(api) == before


async def test_a_schedule_window_that_does_not_end_after_it_starts_is_422(api: Api) -> None:
    ticket = await api.create_ticket()
    before = await written(api)

    for window_end in ("2026-11-27T12:00:00Z", WINDOW["window_start"], "2026-11-27T14:00:00+02:00"):
        reply = await api.act(ticket["id"], "schedule", {**WINDOW, "window_end": window_end})
        assert error_paths(assert_problem(reply, 422, "validation_failed")) == {"/window_end"}

    assert await written(api) == before
    assert (await api.request("GET", f"/v1/tickets/{ticket['id']}")).body["assignment"] is None


async def test_a_schedule_time_without_offset_or_out_of_range_or_not_a_date_is_422(
    api: Api,
) -> None:
    ticket = await api.create_ticket()
    before = await written(api)

    for field, value in (
        ("window_start", "2026-11-27T13:00:00"),
        ("window_end", "2026-11-27T15:00:00"),
        ("window_start", "tomorrow morning"),
        ("window_end", "2026-13-45T15:00:00Z"),
        ("window_end", "9999-12-31T23:59:59-14:00"),
        ("window_start", "0001-01-01T00:00:00+14:00"),
    ):
        reply = await api.act(ticket["id"], "schedule", {**WINDOW, field: value})
        assert error_paths(assert_problem(reply, 422, "validation_failed")) == {f"/{field}"}

    assert await written(api) == before


async def test_cancel_without_a_reason_is_422_and_records_no_event(api: Api) -> None:
    ticket = await api.create_ticket()
    before = await written(api)

    for body in (None, {}, {"reason": ""}):
        reply = await api.act(ticket["id"], "cancel", body)
        assert_problem(reply, 422, "validation_failed")

    assert await written(api) == before
    assert [e["type"] for e in await api.timeline(ticket["id"])] == ["created"]
    state = (await api.request("GET", f"/v1/tickets/{ticket['id']}")).body["state"]
    assert state == "READY_TO_SCHEDULE"


async def test_bad_list_query_parameters_are_400_invalid_query(api: Api) -> None:
    await api.create_ticket()
    forged = base64.urlsafe_b64encode(
        orjson.dumps(["0001-01-01T00:00:00+14:00", str(uuid.uuid4())])
    ).decode()

    for query, parameter in (
        ("state=BOGUS", "state"),
        ("state=NEW,BOGUS", "state"),
        ("state=new", "state"),
        ("priority=P9", "priority"),
        ("priority=P1&priority=P0", "priority"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=-1", "limit"),
        ("limit=abc", "limit"),
        ("limit=", "limit"),
        ("cursor=garbage", "cursor"),
        ("cursor=" + base64.urlsafe_b64encode(b'{"a": 1}').decode(), "cursor"),
        ("cursor=" + base64.urlsafe_b64encode(b'["yesterday", "x"]').decode(), "cursor"),
        ("cursor=" + forged, "cursor"),
        ("technician_id=has%20space", "technician_id"),
    ):
        reply = await api.request("GET", f"/v1/tickets?{query}")
        assert assert_problem(reply, 400, "invalid_query")["parameter"] == parameter, query


async def test_bad_timeline_query_parameters_are_400_invalid_query(api: Api) -> None:
    ticket = await api.create_ticket()

    for query, parameter in (
        ("after_seq=-1", "after_seq"),
        ("after_seq=one", "after_seq"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
    ):
        reply = await api.request("GET", f"/v1/tickets/{ticket['id']}/timeline?{query}")
        assert assert_problem(reply, 400, "invalid_query")["parameter"] == parameter, query


async def test_a_nul_character_in_a_string_is_422_not_a_server_error(api: Api) -> None:
    ticket = await api.create_ticket()
    before = await written(api)

    for method, path, body, pointer in (
        ("POST", "/v1/tickets", {**COMPLETE_TICKET, "customer_name": "Ada\x00"}, "/customer_name"),
        ("PATCH", f"/v1/tickets/{ticket['id']}", {"description": "\x00"}, "/description"),
        ("POST", f"/v1/tickets/{ticket['id']}/cancel", {"reason": "a\x00b"}, "/reason"),
        ("POST", f"/v1/tickets/{ticket['id']}/mitigations", {"action": "\x00"}, "/action"),
    ):
        reply = await api.request(method, path, json=body)
        assert error_paths(assert_problem(reply, 422, "validation_failed")) == {pointer}

    assert await written(api) == before


async def test_unauthenticated_calls_are_401_with_www_authenticate(api: Api) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic eA=="}):
        reply = await api.request("GET", "/v1/tickets", as_="", headers=headers)
        assert_problem(reply, 401, "unauthenticated")
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")


# --- any JSON at all --------------------------------------------------------------------

_FIELD_NAMES = sorted(
    {name for body in TICKET_POST_ROUTES.values() for name in body}
    | {"technician_id", "bypass_reason", "reason", "tag", "uri", "sha256", "size_bytes"}
)
_PLAUSIBLE = [
    "P1",
    "customer",
    "provider",
    "phone",
    "reached",
    "supervisor",
    "photo",
    "before",
    "image/png",
    "text/plain",
    "tech-1",
    "https://evidence.example/1.png",
    "2026-11-27T13:00:00Z",
    "2026-11-27T13:00:00",
    "aGVsbG8=",
    "0" * 64,
    "",
    "nul\x00byte",
]
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(_PLAUSIBLE)
    | st.sampled_from([0, 2**31, 2**63, 2**64, -(2**63) - 1])
)
JSON_VALUES = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(_FIELD_NAMES) | st.text(max_size=10), children, max_size=6
        )
    ),
    max_leaves=12,
)
#: Values that have tripped code behind a schema before: NUL (PostgreSQL text cannot hold
#: it), integers past bigint, integral floats, impossible or out-of-range date-times.
_TRICKY = st.sampled_from(
    [
        "nul\x00byte",
        2**63,
        2**64,
        5.0,
        "",
        "x" * 1001,
        "2026-02-30T10:00:00Z",
        "9999-12-31T23:59:59-14:00",
        "0001-01-01T00:00:00+14:00",
    ]
)
_URI_EVIDENCE = {
    "kind": "photo",
    "content_type": "image/png",
    "uri": "https://evidence.example/1.png",
    "sha256": "0" * 64,
    "size_bytes": 10,
}
#: A body some route accepts with one of its members replaced, or members added, so that
#: arbitrary values also reach the code behind the schema.
_ROUTE_BODIES = st.sampled_from([*TICKET_POST_ROUTES.values(), _URI_EVIDENCE])
_REPLACED = _ROUTE_BODIES.flatmap(
    lambda base: st.builds(
        lambda name, value: {**base, name: value},
        st.sampled_from(sorted(base) or _FIELD_NAMES),
        _TRICKY | _SCALARS,
    )
)
_EXTENDED = st.builds(
    lambda base, extra: {**base, **extra},
    _ROUTE_BODIES,
    st.dictionaries(st.sampled_from(_FIELD_NAMES), _TRICKY | JSON_VALUES, max_size=2),
)
BODIES = JSON_VALUES | _REPLACED | _EXTENDED


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(body=BODIES, priority=st.sampled_from(["P1", "P2"]))
async def test_any_json_posted_to_any_ticket_route_gets_no_server_error(
    api: Api, body: Any, priority: str
) -> None:
    ticket = await api.create_ticket(priority=priority)
    raw = json.dumps(body)

    for action in TICKET_POST_ROUTES:
        reply = await api.request(
            "POST", f"/v1/tickets/{ticket['id']}/{action}", data=raw, headers=JSON_HEADERS
        )
        assert reply.status < 500, (action, raw, reply.body)
        if reply.status >= 400:
            assert reply.content_type == "application/problem+json", (action, raw)
            assert reply.body.keys() >= PROBLEM_FIELDS, (action, raw, reply.body)
            assert reply.body["status"] == reply.status
        else:
            assert reply.content_type == "application/json", (action, raw)
