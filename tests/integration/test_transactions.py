"""Topics written by transactional producers: ``isolation_level`` decides what handlers see."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from kafka_retry import Consumer, Message

from .support import config_for, create_topics, eventually, fresh, produce

pytestmark = pytest.mark.integration


async def _write_transactions(bootstrap: str, topic: str) -> None:
    """Two records in an aborted transaction, then one in a committed one."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=fresh("tx"))
    await producer.start()
    try:
        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"aborted-1")
        await producer.send_and_wait(topic, b"aborted-2")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed")
    finally:
        await producer.stop()


@pytest.mark.parametrize(
    ("isolation_level", "seen"),
    [
        ("read_committed", [b"committed", b"end"]),
        ("read_uncommitted", [b"aborted-1", b"aborted-2", b"committed", b"end"]),
    ],
)
async def test_isolation_level_decides_whether_aborted_records_are_handled(
    kafka_service: Any, isolation_level: str, seen: list[bytes]
) -> None:
    """read_committed skips records of aborted transactions; read_uncommitted hands them over."""
    if not kafka_service.supports_idempotence:
        pytest.skip("the broker hands out no producer ids, so no transactions")
    bootstrap = kafka_service.bootstrap_servers
    topic = fresh("tx")
    await create_topics(bootstrap, topic)
    await _write_transactions(bootstrap, topic)
    await produce(bootstrap, topic, [(None, b"end", [])])
    values: list[bytes | None] = []

    async def handle(message: Message) -> None:
        values.append(message.value)

    config = config_for(kafka_service, topics=[topic], isolation_level=isolation_level)
    async with Consumer(config, {topic: handle}):
        await eventually(lambda: b"end" in values)
    assert values == seen
