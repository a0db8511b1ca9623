"""Tracing is configured by settings: exporter, sampling ratio, service name and version."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.sampling import Decision

from telemetry import TracingSettings, tracer_provider

CLI = Path(sys.executable).with_name("dispatch-bridge")


def test_the_provider_names_the_service_and_its_version() -> None:
    provider = tracer_provider(TracingSettings(service_version="9.9.9"), "bridge")

    attributes = provider.resource.attributes
    assert (attributes["service.name"], attributes["service.version"]) == ("bridge", "9.9.9")


@pytest.mark.parametrize(("ratio", "sampled"), [(0.0, 0), (1.0, 200)])
def test_the_sampling_ratio_decides_how_many_root_traces_are_recorded(
    ratio: float, sampled: int
) -> None:
    provider = tracer_provider(TracingSettings(sampling_ratio=ratio, exporter="console"), "bridge")

    decisions = [
        provider.sampler.should_sample(None, trace_id, "x").decision for trace_id in range(1, 201)
    ]

    assert sum(d is Decision.RECORD_AND_SAMPLE for d in decisions) == sampled


def test_a_remote_callers_sampled_flag_does_not_force_sampling() -> None:
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    provider = tracer_provider(TracingSettings(sampling_ratio=0.0, exporter="console"), "bridge")
    remote = SpanContext(
        trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
        span_id=0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    parent = trace.set_span_in_context(NonRecordingSpan(remote))

    result = provider.sampler.should_sample(parent, remote.trace_id, "x")

    assert result.decision is Decision.DROP


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"exporter": "jaeger"}, "DISPATCH_TRACE_EXPORTER"),
        ({"sampling_ratio": 1.5}, "DISPATCH_TRACE_SAMPLING_RATIO"),
    ],
)
def test_bad_tracing_settings_are_refused_naming_the_variable(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        TracingSettings(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("command", ["serve-bridge", "serve-api"])
@pytest.mark.parametrize(
    ("variable", "value"),
    [("DISPATCH_TRACE_EXPORTER", "jaeger"), ("DISPATCH_LOG_LEVEL", "verbose")],
)
def test_the_cli_refuses_a_bad_telemetry_setting_with_exit_2_naming_it(
    command: str, variable: str, value: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    env |= {variable: value, "DISPATCH_GATEWAY_TOKEN": "x", "DISPATCH_DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [str(CLI), command], env=env, capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 2, result.stderr
    assert variable in result.stderr
    assert "Traceback" not in result.stderr


def test_without_an_exporter_spans_keep_their_ids_but_are_not_recorded() -> None:
    provider = tracer_provider(TracingSettings(exporter="none"), "bridge")

    span = provider.get_tracer("t").start_span("x")

    assert span.get_span_context().is_valid  # ids for logs, timeline and propagation
    assert not span.is_recording()
