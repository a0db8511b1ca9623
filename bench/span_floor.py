"""S4's floor: what the OpenTelemetry SDK alone costs to record and export one call's spans.

The spans are the ones the product exported during S4's 100 % run, decoded from the OTLP
requests the collector stand-in received: one call's trace (the most common shape: each
span's service, name, kind, attributes and parent). A separate process replays that trace
`calls` times through providers built as the services build theirs
(`telemetry.tracer_provider`: the sampler, the batch processor, the OTLP/HTTP exporter to
the same stand-in), then flushes, and prints its CPU seconds per call (every thread, so
the exporter's encoding counts). No service runs in it: this is the cost of the spans
themselves, which no change to the product can remove while it records them.

    python -m bench.span_floor ENDPOINT CALLS TRACE.json
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from telemetry import TracingSettings, tracer_provider

#: The replay's service.version, which tells its spans from the product's at the collector.
VERSION = "span-floor"

#: One span of a trace, as the replay needs it.
Shape = dict[str, Any]  # service, name, kind, attributes, parent (index or None)


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


def one_call(bodies: list[bytes]) -> list[Shape]:
    """The most common trace shape among the exported requests `bodies` (one trace per
    call: the bridge's spans and dispatch-api's share its trace id), in start order."""
    spans: dict[bytes, list[tuple[int, str, Any]]] = collections.defaultdict(list)
    for body in bodies:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            service = next(
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            )
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    spans[span.trace_id].append((span.start_time_unix_nano, service, span))
    if not spans:
        raise RuntimeError("S4: the collector received no spans")
    shapes = collections.Counter(
        tuple(sorted((svc, s.name) for _, svc, s in trace_spans)) for trace_spans in spans.values()
    )
    common = shapes.most_common(1)[0][0]
    found = next(
        sorted(t, key=lambda x: x[0])
        for t in spans.values()
        if tuple(sorted((svc, s.name) for _, svc, s in t)) == common
    )
    index = {s.span_id: i for i, (_, _, s) in enumerate(found)}
    return [
        {
            "service": svc,
            "name": s.name,
            "kind": s.kind - 1,  # OTLP numbers kinds from 1 (internal); the SDK from 0
            "attributes": {a.key: _value(a.value) for a in s.attributes},
            "parent": index.get(s.parent_span_id),
        }
        for _, svc, s in found
    ]


def replayed_spans(bodies: list[bytes]) -> int:
    """How many of the spans in the OTLP requests `bodies` the replay sent."""
    total = 0
    for body in bodies:
        for rs in ExportTraceServiceRequest.FromString(body).resource_spans:
            version = [a.value.string_value for a in rs.resource.attributes]
            if VERSION in version:
                total += sum(len(scope.spans) for scope in rs.scope_spans)
    return total


def replay(shapes: list[Shape], endpoint: str, calls: int, per_s: float = 500) -> float:
    """CPU seconds of this process per replayed call. Calls are paced at `per_s` (about
    the product's rate): faster, the batch processor's queue would overflow and drop spans
    it then never encodes, which would understate the cost."""
    settings = TracingSettings(
        exporter="otlp", sampling_ratio=1.0, otlp_endpoint=endpoint, service_version=VERSION
    )
    providers = {s["service"]: tracer_provider(settings, s["service"]) for s in shapes}
    tracers = {name: p.get_tracer("bench.span_floor") for name, p in providers.items()}
    kinds = list(trace.SpanKind)
    started, clock = sum(os.times()[:2]), time.monotonic()
    for n in range(calls):
        if (ahead := clock + n / per_s - time.monotonic()) > 0:
            time.sleep(ahead)
        opened: list[trace.Span] = []
        for s in shapes:
            parent = s["parent"]
            context = trace.set_span_in_context(opened[parent]) if parent is not None else None
            opened.append(
                tracers[s["service"]].start_span(
                    s["name"], context=context, kind=kinds[s["kind"]], attributes=s["attributes"]
                )
            )
        for span in reversed(opened):
            span.end()
    for provider in providers.values():
        provider.force_flush()
        provider.shutdown()
    return (sum(os.times()[:2]) - started) / calls


if __name__ == "__main__":
    endpoint, calls, path = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    print(replay(json.loads(path.read_text()), endpoint, calls))
