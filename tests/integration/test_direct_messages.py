"""The main tier's fetcher builds Messages itself, on a real broker, and nothing else changes.

A consumer marked with :func:`kafka_retry._direct.direct_messages` gets a
:class:`Message` for each record without headers, and aiokafka's
``ConsumerRecord`` for one with headers (the dispatcher splits those); any
other aiokafka consumer of the process gets ``ConsumerRecord``s as before.
The Messages a handler sees are the ones the runtime built before.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from kafka_retry import Consumer, Message, _direct

from .support import config_for, create_topics, eventually, fresh, produce

pytestmark = pytest.mark.integration

RECORDS: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = [
    (b"k1", b"plain", []),
    (None, b"no key", []),
    (b"k3", None, []),
    (b"k4", b"with headers", [("trace", b"1"), ("bin", b"\x00\xff")]),
    (b"k5", b"\xff\x00 not utf-8", []),
]


def _same(key: bytes | None) -> bytes | None:
    return key


async def _fetch_all(bootstrap: str, topic: str, **options: Any) -> list[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **options)
    tp = TopicPartition(topic, 0)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        fetched: list[Any] = []
        while len(fetched) < len(RECORDS):
            batches = await consumer.getmany(timeout_ms=1000)
            fetched += batches.get(tp, [])
        return fetched
    finally:
        await consumer.stop()


async def test_a_marked_consumer_gets_messages_and_others_get_records(kafka_service: Any) -> None:
    """Messages for records without headers; ConsumerRecords for the rest, and other consumers."""
    bootstrap = kafka_service.bootstrap_servers
    topic = fresh()
    await create_topics(bootstrap, topic)
    await produce(bootstrap, topic, RECORDS)
    assert _direct.install()

    marked = await _fetch_all(bootstrap, topic, value_deserializer=_direct.direct_messages)
    assert [type(r) for r in marked] == [Message, Message, Message, ConsumerRecord, Message]
    for record, (key, value, _headers) in zip(marked, RECORDS, strict=True):
        assert (record.topic, record.partition, record.key, record.value) == (topic, 0, key, value)
    assert [r.offset for r in marked] == [0, 1, 2, 3, 4]
    assert all(r.attempt == 1 and r.main_topic == topic for r in marked if type(r) is Message)

    plain = await _fetch_all(bootstrap, topic)
    assert [type(r) for r in plain] == [ConsumerRecord] * len(RECORDS)
    assert [r.timestamp for r in plain] == [r.timestamp for r in marked]
    # A key deserializer means the user wants aiokafka's records: left alone too.
    keyed = await _fetch_all(
        bootstrap, topic, value_deserializer=_direct.direct_messages, key_deserializer=_same
    )
    assert [type(r) for r in keyed] == [ConsumerRecord] * len(RECORDS)


@pytest.mark.parametrize("handler_kind", ["message", "batch"])
async def test_the_main_tier_hands_over_what_was_produced(
    kafka_service: Any, handler_kind: str
) -> None:
    """Every field of the Messages a main-tier handler gets, with and without headers."""
    bootstrap = kafka_service.bootstrap_servers
    topic = fresh()
    await create_topics(bootstrap, topic)
    await produce(bootstrap, topic, RECORDS)
    seen: list[Message] = []

    async def handle(message: Message) -> None:
        seen.append(message)

    async def handle_batch(messages: list[Message]) -> None:
        seen.extend(messages)

    config = config_for(kafka_service, topics=[topic], retry_intervals=[1])
    if handler_kind == "message":
        consumer = Consumer(config, {topic: handle})
    else:
        consumer = Consumer(config, batch_handlers={topic: handle_batch})
    async with consumer:
        await eventually(lambda: len(seen) == len(RECORDS))
    expected = [
        (topic, 0, offset, key, value, tuple(headers), topic, 1, None)
        for offset, (key, value, headers) in enumerate(RECORDS)
    ]
    assert [
        (m.topic, m.partition, m.offset, m.key, m.value, m.headers, m.main_topic, m.attempt,
         m.provenance)
        for m in seen
    ] == expected  # fmt: skip
    assert all(type(m) is Message and m.timestamp > 0 for m in seen)
