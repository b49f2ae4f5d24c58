"""Typed handlers against a real broker (and PostgreSQL): models in, undecodable values out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pydantic
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from kafka_retry import Consumer, DatabaseConfig, Message

from .support import config_for, create_topics, eventually, produce, read_all

pytestmark = pytest.mark.integration

HEADERS = [("trace", b"\x00\xff"), ("trace", b"2"), ("null", None)]


class Order(pydantic.BaseModel):
    """The payload of the orders topic."""

    id: int
    qty: int


class OrderHandler:
    """Records the models and messages it gets; fails attempts as ``fail`` says."""

    def __init__(self, fail: Callable[[Message], bool] = lambda message: False) -> None:
        self.calls: list[tuple[Order, Message]] = []
        self._fail = fail

    async def __call__(self, order: Order, message: Message) -> None:
        self.calls.append((order, message))
        if self._fail(message):
            raise ConnectionError(f"stock service down for order {order.id}")


async def end_offset(bootstrap: str, topic: str) -> int:
    """The end offset of partition 0 of ``topic``, which must exist."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        assert topic in await consumer.topics()
        partition = TopicPartition(topic, 0)
        ends = await consumer.end_offsets([partition])
    finally:
        await consumer.stop()
    return int(ends[partition])


async def test_pydantic_handler_gets_the_model_and_its_retry_too(
    kafka_service: Any, unique_name: Callable[[str], str]
) -> None:
    """The handler gets the validated model with the Message; the retry gets the same model."""
    topic = unique_name("orders")
    bootstrap = kafka_service.bootstrap_servers
    await create_topics(bootstrap, topic)
    await produce(bootstrap, topic, [(b"k", b'{"id": 7, "qty": 2}', HEADERS)])
    config = config_for(kafka_service, topics=[topic], retry_intervals=[0.5])
    handler = OrderHandler(fail=lambda message: message.attempt == 1)
    consumer = Consumer(config)
    consumer.handler(topic)(handler)
    async with consumer:
        await eventually(lambda: len(handler.calls) == 2)
    (first, message), (again, retry) = handler.calls
    assert first == again == Order(id=7, qty=2)
    assert (message.attempt, message.value) == (1, b'{"id": 7, "qty": 2}')
    assert (retry.attempt, retry.topic) == (2, config.topic_chain(topic)[1])


async def test_undecodable_values_go_to_the_dead_letter_at_once(
    kafka_service: Any, unique_name: Callable[[str], str]
) -> None:
    """Invalid JSON and a validation failure are dead-lettered byte-exact; retry1 stays empty."""
    topic = unique_name("orders")
    bootstrap = kafka_service.bootstrap_servers
    await create_topics(bootstrap, topic)
    invalid_json, invalid_order = b"{not json \xff", b'{"id": 1, "qty": "lots"}'
    records = [(b"k1", invalid_json, HEADERS), (b"k2", invalid_order, HEADERS)]
    await produce(bootstrap, topic, records)
    config = config_for(kafka_service, topics=[topic], retry_intervals=[1, 2])
    handler = OrderHandler()
    chain = config.topic_chain(topic)
    async with Consumer(config, {topic: handler}):
        dead = await read_all(bootstrap, chain[-1], 2)
    assert handler.calls == []
    assert [(r.key, r.value, list(r.headers)[:3]) for r in dead] == [
        (k, v, HEADERS) for k, v, _ in records
    ]
    provenance = [dict(record.headers) for record in dead]
    assert {h["kafka-retry-error-type"] for h in provenance} == {b"kafka_retry.DecodeError"}
    assert {h["kafka-retry-attempts"] for h in provenance} == {b"1"}
    assert b"Invalid JSON" in provenance[0]["kafka-retry-error-message"]
    assert provenance[1]["kafka-retry-error-message"].startswith(b"1 validation error for Order")
    # The consumer has stopped, so every hand-off is written: none went to a retry topic.
    for retry_topic in chain[1:-1]:
        assert await end_offset(bootstrap, retry_topic) == 0


async def test_postgres_retry_reaches_the_typed_handler_with_the_model(
    kafka_service: Any,
    database_url: str,
    db_schema: str,
    unique_name: Callable[[str], str],
) -> None:
    """A retry claimed from the PostgreSQL table decodes into the same model."""
    topic = unique_name("orders")
    bootstrap = kafka_service.bootstrap_servers
    await create_topics(bootstrap, topic)
    await produce(bootstrap, topic, [(b"k", b'{"id": 3, "qty": 9}', HEADERS)])
    config = config_for(
        kafka_service,
        topics=[topic],
        retry_intervals=[0.2],
        retry_backend="postgres",
        database=DatabaseConfig.from_url(database_url, schema=db_schema),
    )
    handler = OrderHandler(fail=lambda message: message.attempt == 1)
    async with Consumer(config, {topic: handler}):
        await eventually(lambda: len(handler.calls) == 2)
    (first, message), (again, retry) = handler.calls
    assert first == again == Order(id=3, qty=9)
    assert (retry.attempt, retry.main_topic, retry.offset) == (2, topic, message.offset)
    assert list(retry.headers) == HEADERS
