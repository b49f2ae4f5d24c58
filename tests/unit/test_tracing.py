"""Tracing (``Config(tracing=True)``): spans per attempt, joined and linked across tiers."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
import textwrap
from collections.abc import Coroutine
from typing import Any

import attrs
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from kafka_retry import Config, ConfigError, DatabaseConfig, Message, NonRetryableError
from kafka_retry.message import H_SPAN, Provenance, decode_provenance, is_traceparent
from kafka_retry.retry.base import Failure
from kafka_retry.runtime._tracing import (
    DEAD_LETTER_EVENT,
    process_attributes,
    span_context,
    traceparent,
)
from kafka_retry.runtime.dispatch import Dispatcher
from kafka_retry.testing import TestConsumer, VirtualClock
from tests.tracing_support import (
    assert_one_story,
    attribute,
    flaky,
    named,
    processing,
    produced_headers,
    span_id,
    span_text,
)

SPAN = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
PROVENANCE = Provenance(
    attempts=1,
    original_topic="product",
    original_partition=0,
    original_offset=7,
    original_timestamp=1_000,
    group="shop",
    failed_at=2_000,
    due_at=62_000,
    error_type="RuntimeError",
    error_message="boom",
)


def config(**overrides: Any) -> Config:
    settings: dict[str, Any] = {
        "bootstrap_servers": "localhost:9092",
        "group": "shop",
        "topics": ["product"],
        "retry_intervals": [60],
        "tracing": True,
        **overrides,
    }
    return Config(**settings)


def postgres(**overrides: Any) -> Config:
    return config(retry_backend="postgres", database=DatabaseConfig(), **overrides)


# The header codec


def test_the_failed_attempts_span_travels_as_a_provenance_header() -> None:
    """``kafka-retry-span`` is written when a span is known and read back as it was."""
    traced = attrs.evolve(PROVENANCE, span=SPAN)
    headers = dict(traced.to_headers())
    assert headers[H_SPAN] == SPAN.encode()
    assert H_SPAN not in dict(PROVENANCE.to_headers())
    assert decode_provenance(headers) == traced
    assert decode_provenance(dict(PROVENANCE.to_headers())) == PROVENANCE


@pytest.mark.parametrize(
    "forged",
    [
        b"",
        b"01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # unknown version
        b"00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",  # upper case
        b"00-00000000000000000000000000000000-b7ad6b7169203331-01",  # invalid trace id
        b"00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # invalid span id
        b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0g",
        b"00-0af7651916cd43dd8448eb211c80319c+b7ad6b7169203331-01",
        b"\xff" * 55,
        SPAN.encode() + b"-",
    ],
)
def test_a_malformed_span_header_is_ignored(forged: bytes) -> None:
    """A span header that is not a W3C traceparent leaves the rest of the provenance intact."""
    headers = {**dict(PROVENANCE.to_headers()), H_SPAN: forged}
    assert decode_provenance(headers) == PROVENANCE


def test_traceparent_text_and_span_context_round_trip() -> None:
    """The text form is W3C's, and parses back to the same remote context."""
    context = span_context(SPAN)
    assert context is not None and context.is_remote and context.trace_flags.sampled
    assert traceparent(context) == SPAN
    assert is_traceparent(SPAN)
    assert span_context(None) is None
    assert span_context("not a traceparent") is None


# Attribute building


def test_process_attributes_follow_the_messaging_conventions() -> None:
    """System, destination, partition, offset, group, text key, and the attempt and tier."""
    message = Message("retry1.shop.product", 2, 41, b"sku-7", b"lamp", (), 0, "product", 2)
    assert process_attributes(message, "shop", "retry1") == {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "retry1.shop.product",
        "messaging.destination.partition.id": "2",
        "messaging.kafka.message.offset": 41,
        "messaging.consumer.group.name": "shop",
        "messaging.kafka.message.key": "sku-7",
        "messaging.message.body.size": 4,
        "kafka_retry.attempt": 2,
        "kafka_retry.tier": "retry1",
    }


def test_a_key_that_is_not_text_and_a_null_value() -> None:
    """A binary key is left out (it has no string form); a null value is a tombstone."""
    message = Message("product", 0, 0, b"\xff\x00", None, (), 0, "product")
    attributes = process_attributes(message, "shop", "main")
    assert "messaging.kafka.message.key" not in attributes
    assert attributes["messaging.kafka.message.tombstone"] is True
    assert "messaging.message.body.size" not in attributes


# Spans of a consumer in the test mode


async def test_kafka_backend_one_trace_across_the_retry_topic(
    spans: InMemorySpanExporter,
) -> None:
    """Fails once then succeeds: two attempts in the producer's trace, the retry linked."""
    headers, producer = produced_headers()
    async with TestConsumer(config(), {"product": flaky(1)}) as t:
        await t.publish("product", b"lamp", key=b"sku-7", headers=headers)
        await t.drain()
        [record] = t.records("retry1.shop.product")
    attempts = processing(spans)
    assert_one_story(attempts, producer, tier="retry1")
    assert dict(record.headers)[H_SPAN] == span_text(attempts[0]).encode()
    # The original trace headers travelled unchanged.
    assert [(n, v) for n, v in record.headers if not n.startswith("kafka-retry-")] == headers
    [send] = named(spans, "send ")
    assert (send.name, send.kind) == ("send retry1.shop.product", SpanKind.PRODUCER)
    assert send.parent is not None and send.parent.span_id == span_id(attempts[0])
    assert attribute(send, "messaging.destination.name") == "retry1.shop.product"


async def test_postgres_backend_one_trace_across_the_table(spans: InMemorySpanExporter) -> None:
    """The same story on the table: the row keeps the failed span; the insert is a CLIENT span."""
    headers, producer = produced_headers()
    async with TestConsumer(postgres(), {"product": flaky(1)}) as t:
        await t.publish("product", b"lamp", headers=headers)
        await t.drain()
        assert t.table is not None
        [row] = t.table.rows()
    attempts = processing(spans)
    assert_one_story(attempts, producer, tier="retry1")
    assert row["last_span"] == span_text(attempts[0])
    [insert] = named(spans, "INSERT ")
    assert insert.name == "INSERT public.kafka_consumer_retries"
    assert insert.kind == SpanKind.CLIENT
    assert insert.parent is not None and insert.parent.span_id == span_id(attempts[0])


async def test_postgres_later_tiers_link_to_the_attempt_before(
    spans: InMemorySpanExporter,
) -> None:
    """A row moved on by a poller keeps the newer span: attempt 3 links to attempt 2."""
    async with TestConsumer(postgres(retry_intervals=[1, 1]), {"product": flaky(3)}) as t:
        await t.publish("product", b"lamp")
        await t.drain()
        assert t.table is not None
        [row] = t.table.rows()
    first, second, third = processing(spans)
    assert [link.context.span_id for link in second.links] == [span_id(first)]
    assert [link.context.span_id for link in third.links] == [span_id(second)]
    assert row["state"] == "dead_lettered" and row["last_span"] == span_text(third)
    assert DEAD_LETTER_EVENT in [event.name for event in third.events]
    assert DEAD_LETTER_EVENT not in [event.name for event in second.events]


async def test_a_record_without_trace_context_starts_a_trace(
    spans: InMemorySpanExporter,
) -> None:
    """No traceparent: each attempt is a root span, the retry linked to the failed one."""
    async with TestConsumer(config(), {"product": flaky(1)}) as t:
        await t.publish("product", b"lamp")
        await t.drain()
    first, second = processing(spans)
    assert first.parent is None and second.parent is None
    assert [link.context.span_id for link in second.links] == [span_id(first)]


async def test_a_dead_letter_is_an_event_and_a_send_to_the_dead_letter_topic(
    spans: InMemorySpanExporter,
) -> None:
    """A non-retryable error: the attempt says it is dead-lettered; the send goes there."""
    async with TestConsumer(config(), {"product": flaky(1, NonRetryableError)}) as t:
        await t.publish("product", b"lamp")
        await t.settle()
        [dead] = t.dead_letters("product")
    [attempt] = processing(spans)
    assert [event.name for event in attempt.events] == ["exception", DEAD_LETTER_EVENT]
    assert attribute(attempt, "error.type") == "kafka_retry.NonRetryableError"
    [send] = named(spans, "send ")
    assert send.name == "send deadLetter.shop.product"
    assert attribute(send, "kafka_retry.hand_off") == "dead_letter"
    assert dead.provenance is not None and dead.provenance.span == span_text(attempt)


async def test_a_success_is_one_span_with_the_handler_inside(
    spans: InMemorySpanExporter,
) -> None:
    """The handler runs in its span: its own spans are children; nothing is marked failed."""

    async def handler(message: Message) -> None:
        with trace.get_tracer("shop").start_as_current_span("index product"):
            pass

    async with TestConsumer(config(), {"product": handler}) as t:
        await t.publish("product", b"lamp")
        await t.settle()
    [attempt] = processing(spans)
    [inner] = named(spans, "index ")
    assert inner.parent is not None and inner.parent.span_id == span_id(attempt)
    assert attempt.status.status_code == StatusCode.UNSET and not attempt.links
    assert not named(spans, "send ")


async def test_off_makes_no_spans(spans: InMemorySpanExporter) -> None:
    """Without ``tracing`` no span is made and no span header written, even with an SDK set."""
    async with TestConsumer(config(tracing=False), {"product": flaky(1)}) as t:
        await t.publish("product", b"lamp", headers=produced_headers()[0])
        await t.drain()
        [record] = t.records("retry1.shop.product")
    # Only the producer's span of the test.
    assert [span.name for span in spans.get_finished_spans()] == ["create product"]
    assert H_SPAN not in dict(record.headers)


def test_off_never_imports_opentelemetry() -> None:
    """A consumer without tracing runs, retries included, without loading OpenTelemetry."""
    script = textwrap.dedent(
        """
        import asyncio, sys
        from kafka_retry import Config, Message
        from kafka_retry.testing import TestConsumer

        async def handler(message: Message) -> None:
            if message.attempt == 1:
                raise RuntimeError("once")

        async def main() -> None:
            config = Config(bootstrap_servers="localhost:9092", group="shop",
                            topics=["product"], retry_intervals=[60])
            async with TestConsumer(config, {"product": handler}) as t:
                await t.publish("product", b"lamp", headers=[("traceparent", b"x")])
                await t.drain()
                assert [m.attempt for m in t.calls] == [1, 2]

        asyncio.run(main())
        print(sorted(name for name in sys.modules if name.startswith("opentelemetry")))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


# Settings


def test_tracing_without_the_api_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tracing on where the OpenTelemetry API is not installed is refused, naming the setting."""

    def missing(name: str, package: str | None = None) -> None:
        raise ModuleNotFoundError(f"No module named {name.split('.')[0]!r}")

    monkeypatch.setattr(importlib.util, "find_spec", missing)
    with pytest.raises(ConfigError) as caught:
        config()
    assert caught.value.field == "tracing"
    assert "kafka-retry[otel]" in str(caught.value)
    assert not config(tracing=False).tracing


def test_kafka_tracing_turns_it_on_from_the_environment() -> None:
    """``KAFKA_TRACING=true``; off by default."""
    environ = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "KAFKA_GROUP": "shop", "KAFKA_TOPICS": "p"}
    assert not Config.from_env(environ).tracing
    assert Config.from_env({**environ, "KAFKA_TRACING": "true"}).tracing


async def test_a_hand_off_cancelled_before_it_starts_is_never_made(
    spans: InMemorySpanExporter,
) -> None:
    """The backend's hand-off coroutine is made once the traced one runs: none is left unawaited."""
    made: list[Failure] = []

    async def stored() -> None:
        pass

    class Backend:  # notes when each hand-off coroutine is made, not when it runs
        def schedule(self, failure: Failure) -> Coroutine[Any, Any, None]:
            made.append(failure)
            return stored()

        dead_letter = schedule

    backend = Backend()
    dispatcher = Dispatcher(
        config=config(),
        handlers={"product": flaky(1)},
        main_of={"product": "product"},
        attempt=1,
        retry=backend,
        dead_letters=backend,
        clock=VirtualClock(),
    )
    message = Message("product", 0, 0, None, b"lamp", (), 0, "product")
    error = await dispatcher.invoke(message)
    assert error is not None
    failure = dispatcher.failure(message, error)
    task = asyncio.create_task(dispatcher.route(failure))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert made == []
    await dispatcher.route(failure)
    assert made == [failure] and failure.span is not None
