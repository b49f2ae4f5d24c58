"""Helpers of the tracing tests: a producer's trace context, and reading the spans made."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from kafka_retry import Message
from kafka_retry.runtime._tracing import traceparent


def produced_headers() -> tuple[list[tuple[str, bytes]], trace.SpanContext]:
    """Headers with the trace context of a producer's span, and that span's context."""
    with trace.get_tracer("producer").start_as_current_span("create product") as span:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
    return [(name, value.encode()) for name, value in carrier.items()], span.get_span_context()


class flaky:  # lower case: reads like the function it stands for
    """A handler that fails its first ``failures`` calls; ``calls`` counts them all."""

    def __init__(self, failures: int, error: type[Exception] = RuntimeError) -> None:
        self.calls = 0
        self._failures = failures
        self._error = error

    async def __call__(self, message: Message) -> None:
        self.calls += 1
        if self.calls <= self._failures:
            raise self._error(f"attempt {message.attempt} failed")


def processing(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    found = [span for span in exporter.get_finished_spans() if span.kind == SpanKind.CONSUMER]
    return sorted(found, key=lambda span: attribute(span, "kafka_retry.attempt"))


def attribute(span: ReadableSpan, name: str) -> Any:
    assert span.attributes is not None
    return span.attributes[name]


def span_id(span: ReadableSpan | None) -> int:
    assert span is not None and span.context is not None
    found: int = span.context.span_id
    return found


def named(exporter: InMemorySpanExporter, prefix: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name.startswith(prefix)]


def span_text(span: ReadableSpan) -> str:
    assert span.context is not None
    return traceparent(span.context)


def assert_one_story(
    attempts: Sequence[ReadableSpan],
    producer: trace.SpanContext,
    *,
    tier: str,
    topic: str = "product",
) -> None:
    """Two attempts in the producer's trace: the first failed, the second linked to it."""
    first, second = attempts
    for span in attempts:
        assert span.name == f"process {topic}"
        assert span.parent is not None and span.parent.span_id == producer.span_id
        assert span.context is not None and span.context.trace_id == producer.trace_id
    assert [attribute(span, "kafka_retry.attempt") for span in attempts] == [1, 2]
    assert [attribute(span, "kafka_retry.tier") for span in attempts] == ["main", tier]
    assert first.status.status_code == StatusCode.ERROR
    assert first.status.description == "RuntimeError: attempt 1 failed"
    assert [event.name for event in first.events] == ["exception"]
    assert second.status.status_code == StatusCode.UNSET  # a later success is no failed trace
    [link] = second.links
    assert link.context.span_id == span_id(first)
