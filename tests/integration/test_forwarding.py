"""The Kafka backend forwards any record Kafka accepts, a null key with a null value included."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaProducer

from kafka_retry import Consumer, Message

from .support import config_for, create_topics, eventually, fresh, read_all

HEADERS = [("trace", b"\x00\xff"), ("trace", None)]


async def produce_null_record(bootstrap: str, topic: str) -> None:
    """Produce one record with a null key and a null value (aiokafka's send() refuses it)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        batch = producer.create_batch()
        batch.append(key=None, value=None, timestamp=None, headers=HEADERS)
        batch.close()
        await (await producer.send_batch(batch, topic, partition=0))
    finally:
        await producer.stop()


async def test_null_key_and_value_reach_the_retry_topic_and_dead_letter(kafka_service: Any) -> None:
    """A failing record without key and value is retried and dead-lettered, byte-exact."""
    topic = fresh()
    bootstrap = kafka_service.bootstrap_servers
    await create_topics(bootstrap, topic)
    await produce_null_record(bootstrap, topic)
    config = config_for(kafka_service, topics=[topic], retry_intervals=[0.2])
    calls: list[Message] = []

    async def failing(message: Message) -> None:
        calls.append(message)
        raise RuntimeError("boom")

    async with Consumer(config, {topic: failing}):
        await eventually(lambda: len(calls) == 2)
        dead = await read_all(bootstrap, config.topic_chain(topic)[-1], 1)
    assert [(m.attempt, m.key, m.value, list(m.headers)) for m in calls] == [
        (1, None, None, HEADERS),
        (2, None, None, HEADERS),
    ]
    assert len(dead) == 1
    assert (dead[0].key, dead[0].value, list(dead[0].headers)[:2]) == (None, None, HEADERS)
    assert dead[0].timestamp == calls[0].timestamp
