"""Dead letters for the console tests: a consumer that fails five orders, on either backend."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import attrs
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from kafka_retry import Config, Consumer, DatabaseConfig, Message
from kafka_retry.console import console_app

from .support import config_for, create_topics, eventually, fresh, produce

#: Three timeouts that differ only in numbers, one bad payload, one binary value.
RECORDS: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]] = [
    (b"order-1", b'{"id": 1}', [("trace", b"a")]),
    (b"order-2", b'{"id": 2}', []),
    (b"order-3", b'{"id": 3}', [("bin", b"\x00\xff")]),
    (b"order-4", b'{"id": "four"}', []),
    (b"order-5", b"\xff\xfe\x00 not text", []),
]
TIMEOUT_GROUP = "TimeoutError: order <n> timed out after <n> ms"


async def fail_orders(message: Message) -> None:
    """Orders 1-3 time out (with their own numbers); the others are malformed."""
    assert message.key is not None
    number = int(message.key.split(b"-")[1])
    if number <= 3:
        raise TimeoutError(f"order {number} timed out after {number * 250 + 3} ms")
    raise ValueError(f"bad payload in 'order-{number}'")


async def dead_letter_orders(
    kafka: Any, backend: str, database_url: str | None, schema: str | None
) -> Config:
    """A fresh topic whose five RECORDS are all dead letters of the ``backend``."""
    topic = fresh("orders")
    await create_topics(kafka.bootstrap_servers, topic)
    fields: dict[str, Any] = {"topics": [topic], "retry_backend": backend, "metrics": False}
    if backend == "postgres":
        assert database_url is not None and schema is not None
        fields["database"] = DatabaseConfig.from_url(database_url, schema=schema)
    config = config_for(kafka, retry_intervals=[30], **fields)
    calls: list[Message] = []

    async def handler(message: Message) -> None:
        calls.append(message)
        await fail_orders(message)

    await produce(kafka.bootstrap_servers, topic, RECORDS)
    # No retry tiers for the run: every failure goes straight to the dead letter.
    async with Consumer(attrs.evolve(config, retry_intervals=()), {topic: handler}):
        await eventually(lambda: len(calls) == len(RECORDS))
    return config


def client(config: Config, **options: Any) -> httpx.AsyncClient:
    """An HTTP client of the console app, in process."""
    transport = httpx.ASGITransport(app=console_app(config, **options))
    return httpx.AsyncClient(transport=transport, base_url="http://console", timeout=60)


async def count_records(bootstrap: str, topic: str) -> int:
    """Records in ``topic`` (one partition) before a sentinel produced now, sentinels not counted.

    Independent of the end offsets a broker reports, and needs no waiting for silence.
    """
    mine = uuid.uuid4().bytes
    await produce(bootstrap, topic, [(b"sentinel", mine, [])])
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    count = 0
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.seek_to_beginning()
        async with asyncio.timeout(30):
            while True:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for record in records:
                        if record.key == b"sentinel" and record.value == mine:
                            return count
                        count += record.key != b"sentinel"
    finally:
        await consumer.stop()


@contextlib.asynccontextmanager
async def fresh_schema(database_url: str) -> AsyncIterator[str]:
    """A new, empty schema, dropped with its contents afterwards."""
    name = f"console_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(f'CREATE SCHEMA "{name}"')
        try:
            yield name
        finally:
            await connection.execute(f'DROP SCHEMA "{name}" CASCADE')
    finally:
        await connection.close()
