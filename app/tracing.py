"""OpenTelemetry traces for the reference app: the provider, the request's span, ids for logs.

    configure()           main()'s one call: the process's provider (resource, sampler, exporter),
                          registered globally, and psycopg instrumented to report to it
    server_span()         the SERVER span of one request, continuing the caller's trace
    log_fields()          trace_id / span_id / xray_trace_id of the current span, for log lines

The SDK reads its own settings: OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (the sampler),
OTEL_EXPORTER_OTLP_ENDPOINT and friends (the exporter appends /v1/traces), OTEL_BSP_* (the batch
processor), OTEL_RESOURCE_ATTRIBUTES. Without OTEL_EXPORTER_OTLP_ENDPOINT nothing is exported, but
spans still exist, so log lines still carry trace ids.

An incoming trace is continued from `traceparent` (W3C Trace Context) or from an X-Ray
`X-Amzn-Trace-Id` with a Parent. The ALB sends a Root without a Parent (it sends nothing to
X-Ray itself); the request's span then starts a new trace under that Root's id, so its trace id
is the one in the load balancer's access log.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.propagators.aws import AwsXRayPropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

SERVICE_NAME = "analytics-api"

# Extraction runs in order and a later valid context wins: a W3C parent over an X-Ray one.
PROPAGATOR = CompositePropagator([AwsXRayPropagator(), TraceContextTextMapPropagator()])

# The kubelet's probes, the load balancers' health checks and Prometheus scrapes come every few
# seconds from every pod's callers, with no trace context: a root trace each would be most of
# X-Ray's bill and bury the requests. They are traced only when a caller sends a trace context.
PROBE_ROUTES = frozenset({"/health/live", "/health/ready", "/metrics"})

_XRAY_ROOT = re.compile(r"(?:^|;)\s*Root=1-([0-9a-fA-F]{8})-([0-9a-fA-F]{24})\s*(?=;|$)")
_load_balancer_trace_id: ContextVar[int | None] = ContextVar("load_balancer_trace_id", default=None)


class LoadBalancerTraceIds(RandomIdGenerator):
    """Random W3C ids, except a new trace under an ALB's Root takes that Root's id.

    X-Ray accepts W3C (fully random) trace ids since October 2023 (ADOT Collector 0.34+), so
    the X-Ray id generator's epoch prefix is not needed."""

    def generate_trace_id(self) -> int:
        return _load_balancer_trace_id.get() or super().generate_trace_id()


def resource(version: str, environment: str, color: str) -> Resource:
    # Resource.create adds OTEL_RESOURCE_ATTRIBUTES and the SDK's own attributes. OTEL_SERVICE_NAME
    # wins, as in the SDK; without it the app's name, not the SDK's "unknown_service".
    return Resource.create(
        {
            "service.name": os.environ.get("OTEL_SERVICE_NAME") or SERVICE_NAME,
            "service.version": version,
            "deployment.environment.name": environment,
            "deployment.color": color,
        }
    )


def exporter_from_env(env: Mapping[str, str]) -> SpanExporter | None:
    """OTLP over HTTP/protobuf when an endpoint is set; None (local runs, tests) otherwise."""
    if not (
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        return None
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if protocol != "http/protobuf":
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: this app exports http/protobuf")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # endpoint, headers, timeout and compression from the env


def tracer_provider(
    version: str, environment: str, color: str, exporter: SpanExporter | None = None
) -> TracerProvider:
    # No sampler argument: the SDK reads OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG.
    provider = TracerProvider(
        resource=resource(version, environment, color), id_generator=LoadBalancerTraceIds()
    )
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def instrument_database(provider: TracerProvider) -> None:
    """psycopg CLIENT spans for every connection opened from now on.

    The instrumentation's defaults are kept on purpose: no query parameters
    (capture_parameters), no sqlcommenter, and the db.* names (db.system, db.name,
    db.statement) that the X-Ray exporter turns into SQL subsegments. Each test builds its own
    provider, so an earlier instrumentation is replaced rather than kept."""
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor  # imports psycopg

    instrumentor = PsycopgInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    instrumentor.instrument(
        tracer_provider=provider, capture_parameters=False, enable_commenter=False
    )


def configure(version: str, environment: str, color: str) -> TracerProvider:
    provider = tracer_provider(version, environment, color, exporter_from_env(os.environ))
    trace.set_tracer_provider(provider)
    instrument_database(provider)
    return provider


def _load_balancer_root(header: str | None) -> int | None:
    match = _XRAY_ROOT.search(header or "")
    return int(match.group(1) + match.group(2), 16) if match else None


@contextmanager
def server_span(
    tracer: trace.Tracer, headers: Any, method: str, route: str | None, attributes: dict[str, Any]
) -> Iterator[trace.Span]:
    """The current SERVER span of one request, named `{method} {route}` (the HTTP semantic
    conventions' span name; the method alone when no route matched)."""
    parent = PROPAGATOR.extract(headers)
    inherited = None
    if not trace.get_current_span(parent).get_span_context().is_valid:
        inherited = _load_balancer_root(headers.get("X-Amzn-Trace-Id"))
        if inherited is None and route in PROBE_ROUTES:
            # No span, and none for the database check it starts either (the instrumentations
            # skip their work while instrumentation is suppressed).
            with suppress_instrumentation():
                yield trace.INVALID_SPAN
            return
    token = _load_balancer_trace_id.set(inherited)
    try:
        span = tracer.start_span(
            f"{method} {route}" if route else method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={**attributes, **({"http.route": route} if route else {})},
        )
    finally:
        _load_balancer_trace_id.reset(token)
    # Exceptions are the handler's to answer (a 500); it sets error.type and the status.
    with trace.use_span(
        span, end_on_exit=True, record_exception=False, set_status_on_exception=False
    ):
        yield span


def set_response(span: trace.Span, status: int, error_type: str | None = None) -> None:
    """A 5xx is an error of the server span; a 4xx is the client's, so its status stays unset."""
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_attribute("error.type", error_type or str(status))
        span.set_status(Status(StatusCode.ERROR))


def log_fields() -> dict[str, str]:
    """The current span's ids; also in X-Ray's form (1-{8 hex}-{24 hex}), which the X-Ray
    exporter derives from any W3C id."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    trace_id = trace.format_trace_id(context.trace_id)
    return {
        "trace_id": trace_id,
        "span_id": trace.format_span_id(context.span_id),
        "xray_trace_id": f"1-{trace_id[:8]}-{trace_id[8:]}",
    }
