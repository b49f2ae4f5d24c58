"""Tracing against Apache Kafka and PostgreSQL: one trace across a real retry hop."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from kafka_retry import Consumer, DatabaseConfig
from kafka_retry.message import H_SPAN
from tests.tracing_support import (
    assert_one_story,
    flaky,
    named,
    processing,
    produced_headers,
    span_id,
    span_text,
)

from .support import config_for, create_topics, eventually, produce, read_all

pytestmark = pytest.mark.integration


async def test_a_retry_on_kafka_is_one_trace_with_the_producer(
    kafka_service: Any, spans: InMemorySpanExporter, unique_name: Callable[[str], str]
) -> None:
    """Fails once, then succeeds from the retry topic: two attempts in the producer's trace."""
    topic = unique_name("product")
    bootstrap = kafka_service.bootstrap_servers
    await create_topics(bootstrap, topic)
    headers, producer = produced_headers()
    await produce(bootstrap, topic, [(b"sku-7", b"lamp", headers)])
    config = config_for(kafka_service, topics=[topic], retry_intervals=[0.2], tracing=True)
    async with Consumer(config, {topic: flaky(1)}):
        await eventually(lambda: len(processing(spans)) == 2)
    attempts = processing(spans)
    assert_one_story(attempts, producer, tier="retry1", topic=topic)
    retry_topic = config.topic_chain(topic)[1]
    [record] = await read_all(bootstrap, retry_topic, 1)
    assert dict(record.headers)[H_SPAN] == span_text(attempts[0]).encode()
    [send] = named(spans, f"send {retry_topic}")
    assert send.kind == SpanKind.PRODUCER
    assert send.parent is not None and send.parent.span_id == span_id(attempts[0])


async def test_a_retry_through_postgres_is_one_trace_with_the_producer(
    kafka_service: Any,
    database_url: str,
    db_schema: str,
    spans: InMemorySpanExporter,
    unique_name: Callable[[str], str],
) -> None:
    """The same story when the retry waits as a row: its last_span links the attempts."""
    topic = unique_name("product")
    bootstrap = kafka_service.bootstrap_servers
    await create_topics(bootstrap, topic)
    headers, producer = produced_headers()
    await produce(bootstrap, topic, [(b"sku-7", b"lamp", headers)])
    config = config_for(
        kafka_service,
        topics=[topic],
        retry_intervals=[0.2],
        retry_backend="postgres",
        database=DatabaseConfig.from_url(database_url, schema=db_schema),
        tracing=True,
    )
    async with Consumer(config, {topic: flaky(1)}):
        await eventually(lambda: len(processing(spans)) == 2)
    attempts = processing(spans)
    assert_one_story(attempts, producer, tier="retry1", topic=topic)
    [insert] = named(spans, "INSERT ")
    assert insert.kind == SpanKind.CLIENT
    assert insert.parent is not None and insert.parent.span_id == span_id(attempts[0])


async def test_off_makes_no_spans_on_kafka(
    kafka_service: Any, spans: InMemorySpanExporter, unique_name: Callable[[str], str]
) -> None:
    """Tracing off: the same retry makes no span and writes no span header."""
    topic = unique_name("product")
    bootstrap = kafka_service.bootstrap_servers
    await create_topics(bootstrap, topic)
    headers, _ = produced_headers()
    spans.clear()
    await produce(bootstrap, topic, [(b"sku-7", b"lamp", headers)])
    config = config_for(kafka_service, topics=[topic], retry_intervals=[0.2])
    handler = flaky(1)
    async with Consumer(config, {topic: handler}):
        await eventually(lambda: handler.calls == 2)
    [record] = await read_all(bootstrap, config.topic_chain(topic)[1], 1)
    assert H_SPAN not in dict(record.headers)
    assert spans.get_finished_spans() == ()


async def test_off_a_real_consumer_never_imports_opentelemetry(
    kafka_service: Any, unique_name: Callable[[str], str]
) -> None:
    """In a fresh interpreter, a consumer on Apache Kafka handles and retries without loading it."""
    topic = unique_name("product")
    bootstrap = kafka_service.bootstrap_servers
    await create_topics(bootstrap, topic)
    await produce(bootstrap, topic, [(b"sku-7", b"lamp", [("traceparent", b"00-x")])])
    config = config_for(kafka_service, topics=[topic], retry_intervals=[0.2])
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from kafka_retry import Config, Consumer, Message

        async def main() -> None:
            done = asyncio.Event()

            async def handler(message: Message) -> None:
                if message.attempt == 1:
                    raise RuntimeError("once")
                done.set()

            config = Config(bootstrap_servers={config.bootstrap!r}, group={config.group!r},
                            topics=[{topic!r}], retry_intervals=[0.2], commit_interval=0.2,
                            idempotence={config.idempotence!r})
            async with Consumer(config, {{{topic!r}: handler}}):
                await done.wait()

        asyncio.run(main())
        print(sorted(name for name in sys.modules if name.startswith("opentelemetry")))
        """
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0
    assert out.decode().strip().splitlines()[-1] == "[]"
