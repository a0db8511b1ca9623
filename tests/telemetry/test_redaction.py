"""What reaches a log line: no credential in any shape, no field beyond its bound."""

from __future__ import annotations

import logging
import sys

import orjson
import pytest

from telemetry import JsonFormatter, JsonLog, redact

KEY = "agent-key-7c1d-SECRET-0123456789"
TOKEN = "dsp_" + "Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHF1dXg"
AGENT_KEY = "agt_" + "c2VjcmV0LWtleS1mb3ItYW4tYWdlbnQtMDEyMzQ1Njc"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhZ2VudC0xIiwiZGlzcGF0Y2hfcm9sZSI6In4ifQ.c2lnbmF0dXJl"

#: Texts as they reach logs: aiohttp's parser messages (raw bytes echoed), header
#: mappings in tracebacks, free text.
CARRIERS = [
    "Invalid header value char:\n\n  b'Authorization: Bearer \\x00{k}'\n      ^",
    "Invalid header value char:\n\n  b'Authorization: Token {k}\\x00'",
    "Invalid header value char:\n\n  b'Authorization: {k}\\x00'",
    "Invalid header value char:\n\n  b'Authorization:    bearer   {k} \\x01'",
    "Unexpected whitespace after header value:\n\n  b' {k}'\n    ^",  # obs-fold
    "Invalid header token:\n\n  b'Authori\\x00zation: {k}'",
    "Invalid header token:\n\n  b'Authorization {k}'",
    'Got more than 8190 bytes when reading: b"Authorization: Bearer {k}".',
    "Authorization: Bearer\t{k}",
    "Authorization: Bearer\r\n {k}",
    "authorization: BASIC {k}",
    "Proxy-Authorization: Digest username={k}",
    "Cookie: session={k}; theme=dark",
    "{{'Authorization': 'Negotiate {k}', 'Host': 'bridge'}}",
    "<CIMultiDictProxy('AUTHORIZATION': '{k}')>",
    "[(b'authorization', b'{k}')]",
    '{{"authorization": "{k}"}}',
    "token={k}",  # no header name, no scheme: found only by its shape
]


@pytest.mark.parametrize(
    ("carrier", "secret"),
    [
        (carrier, secret)
        for carrier in CARRIERS
        for secret in (KEY, TOKEN, AGENT_KEY, JWT)
        # A free-form key beside no header, scheme or prefix has no shape to find it by.
        if not (carrier.startswith("token=") and secret == KEY)
    ],
)
def test_a_credential_is_redacted_whatever_shape_carries_it(carrier: str, secret: str) -> None:
    text = carrier.format(k=secret)

    cleaned = redact(text)

    assert secret not in cleaned
    assert secret[:12] not in cleaned
    assert "[redacted]" in cleaned


def test_what_is_not_a_credential_is_left_readable() -> None:
    text = "GET /v1/tickets/6f1c HTTP/1.1 answered 404 ticket_not_found for agent-sup"

    assert redact(text) == text
    assert redact("Invalid header value char:\n  b'X-Trace: a\\x00'") == (
        "Invalid header value char:\n  b'X-Trace: [redacted]'"
    )


def test_every_field_of_a_log_line_is_bounded_and_redacted() -> None:
    lines: list[bytes] = []
    log = JsonLog("bridge", lines.append)
    huge = "T" * 1_000_000

    log.emit(
        "http_request",
        {
            "ticket_id": huge,
            "tool_name": ["x" * 10_000] * 10_000,
            "actor_id": {f"k{i}": huge for i in range(1000)},
            "error_code": f"Bearer {TOKEN}",
            "details": {"nested": {"deeper": [huge] * 100}},
            "attempt": 3,
        },
    )

    [line] = lines
    record = orjson.loads(line)
    assert len(line) < 8 * 1024
    assert record["ticket_id"].startswith("TTTT")
    assert record["ticket_id"].endswith("chars cut]")
    assert len(record["tool_name"]) == 9
    assert TOKEN not in line.decode()
    assert record["attempt"] == 3


def test_a_field_that_is_not_valid_utf8_is_logged_escaped_not_dropped() -> None:
    lines: list[bytes] = []
    # What aiohttp makes of header bytes that are not UTF-8: lone surrogates.
    claimed = b"caf\xe9-\xff".decode("utf-8", "surrogateescape")

    JsonLog("dispatch-api", lines.append).emit("http_request", {"claimed_request_id": claimed})

    assert orjson.loads(lines[0])["claimed_request_id"] == "caf\\udce9-\\udcff"


def test_a_stdlib_record_with_a_huge_message_and_traceback_is_bounded_and_redacted() -> None:
    logger = logging.getLogger("aiohttp.server")
    try:
        raise ValueError(f"Invalid header value char: b'Authorization: Token {KEY}\\x00'")
    except ValueError:
        record = logger.makeRecord(
            "aiohttp.server",
            logging.ERROR,
            __file__,
            1,
            "Error handling request from %s %s",
            ("127.0.0.1", "x" * 1_000_000),
            sys.exc_info(),
        )

    line = JsonFormatter("bridge").format(record)

    assert len(line) < 16 * 1024
    assert KEY not in line
    assert "Invalid header value char" in orjson.loads(line)["exception"]


@pytest.mark.parametrize("secret", [TOKEN, AGENT_KEY, JWT, f"Bearer {KEY}", f"b'{KEY}'"])
def test_a_short_field_holding_a_credential_is_redacted_too(secret: str) -> None:
    lines: list[bytes] = []

    JsonLog("bridge", lines.append).emit("http_request", {"ticket_id": secret, "attempt": 1})

    assert secret not in lines[0].decode()
    assert KEY not in lines[0].decode()
    assert "[redacted]" in orjson.loads(lines[0])["ticket_id"]
