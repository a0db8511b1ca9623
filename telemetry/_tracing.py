"""OpenTelemetry: provider set-up from settings, the server-span middleware, client spans.

The provider is global (OpenTelemetry allows one per process) and configured once, at the
entrypoint. Client spans come from the aiohttp-client instrumentation as a per-session
`trace_config` (no global patching, so sessions created at any time are traced); server
spans from our own small middleware (the aiohttp-server instrumentation would swap
`web.Application`'s class, which silently misses apps created before it runs).
"""

from __future__ import annotations

import contextvars
import types
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.aiohttp_client import create_trace_config
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode

EXPORTERS = ("none", "console", "otlp")

#: How many times the HTTP request under way was sent before (0 on the first try); set by
#: dispatch_client around each try, read when the client span starts.
resend_count: contextvars.ContextVar[int] = contextvars.ContextVar("resend_count", default=0)


@dataclass(frozen=True, slots=True)
class TracingSettings:
    exporter: str = field(default="none", metadata={"env": "DISPATCH_TRACE_EXPORTER"})
    sampling_ratio: float = field(default=1.0, metadata={"env": "DISPATCH_TRACE_SAMPLING_RATIO"})
    otlp_endpoint: str = field(default="", metadata={"env": "DISPATCH_OTLP_ENDPOINT"})
    service_version: str = "0.1.0"

    def __post_init__(self) -> None:
        if self.exporter not in EXPORTERS:
            raise ValueError(f"DISPATCH_TRACE_EXPORTER: must be one of {', '.join(EXPORTERS)}")
        if not 0.0 <= self.sampling_ratio <= 1.0:
            raise ValueError("DISPATCH_TRACE_SAMPLING_RATIO: must be between 0 and 1")


def configure_tracing(
    settings: TracingSettings,
    service: str,
    *,
    processor: SpanProcessor | None = None,
) -> TracerProvider:
    """Install the global tracer provider (once per process) built by `tracer_provider`."""
    provider = tracer_provider(settings, service, processor=processor)
    trace.set_tracer_provider(provider)
    return provider


def tracer_provider(
    settings: TracingSettings,
    service: str,
    *,
    processor: SpanProcessor | None = None,
) -> TracerProvider:
    """A provider for `service`. With exporter `none` spans are still created (so trace ids
    propagate and reach logs and the timeline) but nothing is exported.

    Sampling follows a local parent, and otherwise the ratio, also for remote parents: a
    public caller's sampled flag is not trusted to decide our tracing load. The ratio is
    decided by trace id, so every service with the same ratio samples the same traces.
    """
    exporter = _exporter(settings)
    # With nowhere to send spans, record none: ids are still minted and propagated (logs and
    # the timeline keep their trace_id), but no span objects are filled for nothing.
    ratio = (
        TraceIdRatioBased(settings.sampling_ratio)
        if exporter is not None or processor is not None
        else ALWAYS_OFF
    )
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": service, "service.version": settings.service_version}
        ),
        sampler=ParentBased(ratio, remote_parent_sampled=ratio, remote_parent_not_sampled=ratio),
    )
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    if processor is not None:
        provider.add_span_processor(processor)
    return provider


def _exporter(settings: TracingSettings) -> SpanExporter | None:
    if settings.exporter == "console":
        return ConsoleSpanExporter()
    if settings.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = settings.otlp_endpoint
        return OTLPSpanExporter(endpoint=endpoint) if endpoint else OTLPSpanExporter()
    return None


def instrument_database() -> None:
    """asyncpg spans (statements only, never parameters) inside recorded traces. Global,
    so call it once."""
    instrumentor = _recorded_only_asyncpg()(capture_parameters=False)
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()


#: The statements of the unit of database work under way, when `database_span` is open.
_batch: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "database_batch", default=None
)


@contextmanager
def database_span(name: str) -> Iterator[None]:
    """One CLIENT span for a unit of database work (a transaction, an action's round trips)
    in recorded traces, instead of one per statement: building a span per statement cost
    more than the statement's own client work. Its statements (text, never parameters)
    and their count are attributes, so the trace still says what SQL ran."""
    if not trace.get_current_span().is_recording():
        yield
        return
    statements: list[str] = []
    token = _batch.set(statements)
    tracer = trace.get_tracer("dispatch_bridge.database")
    try:
        with tracer.start_as_current_span(
            name, kind=SpanKind.CLIENT, attributes={"db.system": "postgresql"}
        ) as span:
            try:
                yield
            finally:
                span.set_attribute("db.statement_count", len(statements))
                span.set_attribute("db.operations", [_operation(s) for s in statements])
                span.set_attribute("db.statements", statements)
    finally:
        _batch.reset(token)


def _operation(statement: str) -> str:
    words = statement.split(maxsplit=1)
    return words[0].rstrip(";").upper() if words else ""


def _in_batch(statement: Any) -> bool:
    """Whether a `database_span` takes this statement (listed on it: no span of its own)."""
    batch = _batch.get()
    if batch is None:
        return False
    batch.append(statement if isinstance(statement, str) else "")
    return True


def _recorded_only_asyncpg() -> Any:
    # Imported late: the instrumentation imports asyncpg, which the bridge never needs.
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    class RecordedOnly(AsyncPGInstrumentor):
        """The instrumentation parses each statement and builds a span for it even when
        the trace is not recorded: about a tenth of dispatch-api's CPU per action (six
        statements). A statement under an unrecorded span would not be recorded either
        (ParentBased sampler), so it runs as is.

        These are private methods: pyproject.toml bounds the package to the tested minor and
        tests/telemetry/test_instrumentation_internals.py fails if they move."""

        async def _do_execute(self, func: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            if _in_batch(args[0] if args else None):
                return await func(*args, **kwargs)
            if not trace.get_current_span().is_recording():
                return await func(*args, **kwargs)
            return await super()._do_execute(func, instance, args, kwargs)  # type: ignore[no-untyped-call]

        async def _do_cursor_execute(self, func: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            if _in_batch(getattr(instance, "_query", None)):
                return await func(*args, **kwargs)
            if not trace.get_current_span().is_recording():
                return await func(*args, **kwargs)
            return await super()._do_cursor_execute(func, instance, args, kwargs)  # type: ignore[no-untyped-call]

        async def _do_prepared_execute(
            self, func: Any, instance: Any, args: Any, kwargs: Any
        ) -> Any:
            if _in_batch(getattr(instance, "_query", None)):
                return await func(*args, **kwargs)
            if not trace.get_current_span().is_recording():
                return await func(*args, **kwargs)
            return await super()._do_prepared_execute(func, instance, args, kwargs)  # type: ignore[no-untyped-call]

    return RecordedOnly


def client_trace_config() -> aiohttp.TraceConfig:
    """A client span per HTTP request (so one per retry try), with trace headers injected."""

    def on_request(span: trace.Span, params: aiohttp.TraceRequestStartParams) -> None:
        count = resend_count.get()
        if count:
            span.set_attribute("http.request.resend_count", count)

    config = create_trace_config(request_hook=on_request)
    # The instrumentation builds a client span for every request, recording or not, and
    # that costs more than the rest of a hop's tracing together. Under our ParentBased
    # sampler a request whose caller's span is not recorded would not be recorded either,
    # so for those only the context is propagated (downstream still joins the trace).
    # Its end/exception hooks return early when no span was started (an internal detail:
    # see the bound in pyproject.toml and tests/telemetry/test_instrumentation_internals.py).
    (start,) = config.on_request_start

    async def start_when_recorded(
        session: aiohttp.ClientSession,
        ctx: types.SimpleNamespace,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        if trace.get_current_span().is_recording():
            await start(session, ctx, params)
        else:
            propagate.inject(params.headers)

    config.on_request_start[0] = start_when_recorded
    return config


def propagate_unrecorded(headers: dict[str, str]) -> bool:
    """Outside a recorded span: inject the current trace context into `headers` (downstream
    joins the trace) and True, the request needs no client span; False inside a recorded
    one, whose client span (client_trace_config) injects it."""
    if trace.get_current_span().is_recording():
        return False
    propagate.inject(headers)
    return True


def tracing_middleware(service: str, excluded: Collection[str]) -> Middleware:
    """A SERVER span per request, continuing the caller's `traceparent`; none for `excluded`
    paths (health probes and scrapes would drown the traces)."""
    tracer = trace.get_tracer(service)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in excluded:
            return await handler(request)
        parent = propagate.extract(request.headers)
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else None
        name = f"{request.method} {route}" if route else request.method
        # tracer.start_as_current_span, unrolled (as trace.use_span does it): its two
        # generator-based context managers are a third of an unsampled span's cost, on
        # every request of both services.
        span = tracer.start_span(
            name,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": request.method,
                "url.path": request.path,
                "http.route": route or "",
            },
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            response = await handler(request)
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            return response
        except Exception as exc:  # as use_span: errors only, not a cancellation
            if span.is_recording():
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            otel_context.detach(token)
            span.end()

    return middleware
