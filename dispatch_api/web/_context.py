"""Who is calling and under which ids: bearer auth, asserted actors, request/trace ids."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
from aiohttp import web
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind

from telemetry import SAFE_ID, UnsafeId, current_ids, incoming_id

from ..domain import Actor, ActorType, Role
from ..errors import BadRequest, Forbidden, Unauthenticated
from ..service import Caller
from ..store import Principal
from ._principal_cache import PrincipalCache

TOOL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
IDEMPOTENCY_KEY = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,255}")
MUTATING_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
_ACTOR_HEADERS = ("X-Actor-Type", "X-Actor-Id", "X-Actor-Role")
_ASSERTABLE_ROLES = {Role.DISPATCHER, Role.TECHNICIAN, Role.SUPERVISOR}


def single_header(request: web.Request, name: str) -> str | None:
    """The header's value, None when absent; 400 when sent more than once (which copy
    counts would be the parser's guess, and a proxy in front may have picked the other)."""
    values = request.headers.getall(name, ())
    if len(values) > 1:
        raise BadRequest(
            "invalid_header",
            f"send the {name} header once; it was sent more than once",
            extensions={"header": name},
        )
    return values[0] if values else None


def header_id(request: web.Request, name: str) -> str | None:
    """A validated id header, None when absent; 400 when present but unsafe, or repeated."""
    single_header(request, name)
    try:
        return incoming_id(request.headers.get(name), name)
    except UnsafeId as exc:
        raise BadRequest("invalid_header", str(exc), extensions={"header": name}) from None


def trace_id(request: web.Request, *, trusted: bool = True) -> str | None:
    """The trace this request runs in: the server span's, which continues a valid incoming
    traceparent; without tracing, the traceparent's own (an invalid one is ignored) when the
    caller is `trusted`, else None."""
    current, _ = current_ids()
    if current is not None or not trusted:
        return current
    match = TRACEPARENT.fullmatch(request.headers.get("traceparent", ""))
    if match is None or match.group(1) == "0" * 32:
        return None
    return match.group(1)


def idempotency_key(request: web.Request) -> str | None:
    """The Idempotency-Key of a mutation, None when absent; 400 when malformed.

    The IETF draft makes the header a structured-field string (`"8e03..."`); the bare token
    most clients send is accepted too, and both spellings name the same key.
    """
    value = single_header(request, "Idempotency-Key")
    if value is None:
        return None
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if not IDEMPOTENCY_KEY.fullmatch(value):
        raise BadRequest(
            "invalid_header",
            "Idempotency-Key must be 1-255 printable ASCII characters without quotes or"
            " backslashes (a UUID is recommended)",
            extensions={"header": "Idempotency-Key"},
        )
    return value


def request_id_for(request: web.Request) -> str:
    """The request's id, never failing: a safe X-Request-ID, else a mutation's
    Idempotency-Key, else a fresh UUID. Unsafe headers are refused later, by `caller_for`."""
    given = request.headers.get("X-Request-ID", "")
    if SAFE_ID.fullmatch(given):
        return given
    if request.method in MUTATING_METHODS:
        try:
            key = idempotency_key(request)
        except BadRequest:
            key = None
        if key is not None:
            return key
    return str(uuid.uuid4())


#: Namespace of the request ids minted from a principal's Idempotency-Key (uuid5).
_OWN_REQUEST_IDS = uuid.UUID("3b0d7f0e-6a51-4c3e-9d7e-2f4f1f9a8c11")
_tracer = trace.get_tracer("dispatch-api")


def own_request_id(request: web.Request, principal: Principal) -> str:
    """The request id the server records for a principal that is not a trusted gateway:
    derived from its Idempotency-Key (so a retry keeps it, and it can never equal an id of
    another principal's call), else a fresh UUID. What the caller claims is not used."""
    if request.method in MUTATING_METHODS:
        try:
            key = idempotency_key(request)
        except BadRequest:
            key = None  # refused by the handler
        if key is not None:
            return str(uuid.uuid5(_OWN_REQUEST_IDS, f"{principal.id}\n{key}"))
    return str(uuid.uuid4())


def claimed_ids(request: web.Request) -> dict[str, str]:
    """Ids an untrusted caller sent, for its log line only (`claimed_request_id`, ...)."""
    claimed = {}
    for header, field in (
        ("X-Request-ID", "claimed_request_id"),
        ("X-Correlation-ID", "claimed_correlation_id"),
        ("traceparent", "claimed_traceparent"),
    ):
        value = request.headers.get(header)
        if value is not None:
            claimed[field] = value
    return claimed


@contextmanager
def own_trace(request: web.Request) -> Iterator[None]:
    """For a caller that is not a trusted gateway, the work runs in a trace the server
    starts, linked to the caller's (the OpenTelemetry answer to an untrusted parent): the
    caller's tracing still finds it through the link, but the trace id the timeline records
    cannot be chosen by the caller. A no-op when the caller sent no valid traceparent."""
    incoming = trace.get_current_span(propagate.extract(request.headers)).get_span_context()
    if not incoming.is_valid:
        yield
        return
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else request.method
    with _tracer.start_as_current_span(
        f"{request.method} {route}",
        context=Context(),
        kind=SpanKind.SERVER,
        links=[Link(incoming, {"dispatch.link": "untrusted_parent"})],
        attributes={"http.request.method": request.method, "http.route": route},
    ):
        yield


async def authenticate(
    request: web.Request, cache: PrincipalCache, pool: asyncpg.Pool
) -> Principal:
    header = single_header(request, "Authorization") or ""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated(
            "unauthenticated",
            "send Authorization: Bearer <token>",
            headers={"WWW-Authenticate": 'Bearer realm="dispatch-api"'},
        )
    principal = await cache.lookup(pool, token.strip())
    if principal is None:
        raise Unauthenticated(
            "unauthenticated",
            "the bearer token is not valid",
            headers={"WWW-Authenticate": 'Bearer realm="dispatch-api", error="invalid_token"'},
        )
    return principal


def caller_for(
    request: web.Request, principal: Principal, request_id: str, correlation_id: str
) -> Caller:
    """The acting actor: the principal itself, or the agent a trusted gateway vouches for.

    Raises 400 for unsafe id headers, 403 when an untrusted principal asserts an actor.
    """
    header_id(request, "X-Request-ID")
    header_id(request, "X-Correlation-ID")
    asserted = [h for h in (*_ACTOR_HEADERS, "X-Tool-Name") if h in request.headers]
    if asserted and not principal.trusted_gateway:
        raise Forbidden(
            "actor_assertion_forbidden",
            f"only a trusted gateway may send {', '.join(asserted)}",
            extensions={"headers": asserted},
        )
    tool_name = request.headers.get("X-Tool-Name")
    if tool_name is not None and not TOOL_NAME.fullmatch(tool_name):
        raise BadRequest(
            "invalid_header",
            "X-Tool-Name must match [A-Za-z0-9_.-]{1,128}",
            extensions={"header": "X-Tool-Name"},
        )
    present = [h for h in _ACTOR_HEADERS if h in request.headers]
    if present and len(present) != len(_ACTOR_HEADERS):
        missing = [h for h in _ACTOR_HEADERS if h not in request.headers]
        raise BadRequest(
            "invalid_header",
            f"actor headers go together; missing {', '.join(missing)}",
            extensions={"headers": missing},
        )
    if present:
        actor = Actor(
            type=_enum(ActorType, request.headers["X-Actor-Type"], "X-Actor-Type"),
            id=header_id(request, "X-Actor-Id") or "",
            role=_assertable_role(request.headers["X-Actor-Role"]),
            tool_name=tool_name,
        )
    else:
        actor = Actor(
            type=ActorType.SYSTEM if principal.trusted_gateway else ActorType.HUMAN,
            id=principal.id,
            role=principal.role,
            tool_name=tool_name,
        )
    return Caller(
        principal=principal,
        actor=actor,
        request_id=request_id,
        correlation_id=correlation_id,
        trace_id=trace_id(request, trusted=principal.trusted_gateway),
    )


def _enum(kind: type[ActorType], value: str, header: str) -> ActorType:
    try:
        return kind(value)
    except ValueError:
        raise BadRequest(
            "invalid_header",
            f"{header} must be one of {', '.join(kind)}",
            extensions={"header": header},
        ) from None


def _assertable_role(value: str) -> Role:
    try:
        role = Role(value)
    except ValueError:
        role = None
    if role not in _ASSERTABLE_ROLES or role is None:
        raise BadRequest(
            "invalid_header",
            "X-Actor-Role must be one of dispatcher, technician, supervisor",
            extensions={"header": "X-Actor-Role"},
        )
    return role
