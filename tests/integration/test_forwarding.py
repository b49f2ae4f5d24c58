"""The Kafka backend forwards any record Kafka accepts, a null key with a null value included."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaProducer

from kafka_retry import Consumer, DatabaseConfig, Message, NonRetryableError
from kafka_retry.deadletter import H_REPLAYED_FROM, DeadLetterQuery, open_dead_letters

from .support import config_for, create_topics, eventually, fresh, produce, read_all

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


async def replay_window_with_null_record(kafka_service: Any, **fields: Any) -> None:
    """Dead-letter a null record between two others, replay twice, read the main topic."""
    topic = fresh()
    bootstrap = kafka_service.bootstrap_servers
    await create_topics(bootstrap, topic)
    await produce(bootstrap, topic, [(b"before", b"1", [])])
    await produce_null_record(bootstrap, topic)
    await produce(bootstrap, topic, [(b"after", b"2", [])])
    config = config_for(kafka_service, topics=[topic], metrics=False, **fields)
    calls: list[Message] = []

    async def poison(message: Message) -> None:
        calls.append(message)
        raise NonRetryableError("poison")

    async with Consumer(config, {topic: poison}):
        await eventually(lambda: len(calls) == 3)
    async with open_dead_letters(config) as store:
        first = await store.replay(DeadLetterQuery())
        second = await store.replay(DeadLetterQuery())
    assert first.replayed == 3
    assert (second.replayed, second.already_replayed) == (0, 3)
    records = await read_all(bootstrap, topic, 6)
    replays = [r for r in records if H_REPLAYED_FROM in dict(r.headers)]
    assert len(records) == 6 and len(replays) == 3
    null = [r for r in replays if r.key is None]
    assert [(r.value, list(r.headers)[:2]) for r in null] == [(None, HEADERS)]
    assert sorted(r.key for r in replays if r.key is not None) == [b"after", b"before"]


async def test_null_key_and_value_are_replayed_from_a_dead_letter_topic(
    kafka_service: Any,
) -> None:
    """A replay with a null record in its window sends and marks every one (Kafka backend)."""
    await replay_window_with_null_record(kafka_service)


async def test_null_key_and_value_are_replayed_from_the_retry_table(
    kafka_service: Any, database_url: str, db_schema: str
) -> None:
    """A replay with a null record in its batch sends and marks every one (postgres backend)."""
    database = DatabaseConfig.from_url(database_url, schema=db_schema)
    await replay_window_with_null_record(kafka_service, retry_backend="postgres", database=database)
