"""The real services behave as the rest of the suite assumes."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError

from kafka_retry import devstack
from kafka_retry.errors import ServiceUnavailableError

pytestmark = pytest.mark.integration

KEY = b"key\x00\xff"
VALUE = bytes(range(256))  # every byte value: certainly not UTF-8
HEADERS = [
    ("attempt", b"\x00\x01"),
    ("trace", b"\xff\xfe\xfd"),
    ("attempt", b"\x80"),
    ("empty", b""),
]
TIMESTAMP_MS = 1_700_000_000_123


async def _create_topic(bootstrap: str, topic: str, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
        assert topic in await admin.list_topics()
    finally:
        await admin.close()


@pytest.fixture
async def producer(kafka_service: devstack.KafkaService) -> AsyncIterator[AIOKafkaProducer]:
    """A started producer, idempotent where the broker allows it."""
    client = AIOKafkaProducer(
        bootstrap_servers=kafka_service.bootstrap_servers,
        acks="all",
        enable_idempotence=kafka_service.supports_idempotence,
    )
    await client.start()
    yield client
    await client.stop()


async def _consume_one(bootstrap: str, topic: str, group: str) -> ConsumerRecord[bytes, bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        record: ConsumerRecord[bytes, bytes] = await consumer.getone()
        await consumer.commit({TopicPartition(topic, record.partition): record.offset + 1})
        return record
    finally:
        await consumer.stop()


async def test_record_round_trips_byte_exact(
    kafka_service: devstack.KafkaService,
    producer: AIOKafkaProducer,
    unique_name: Callable[[str], str],
) -> None:
    """Key, non-UTF-8 value, repeated headers in order and the timestamp come back unchanged."""
    topic = unique_name("t")
    await _create_topic(kafka_service.bootstrap_servers, topic)

    sent = await producer.send_and_wait(
        topic, VALUE, key=KEY, headers=HEADERS, timestamp_ms=TIMESTAMP_MS
    )
    record = await _consume_one(kafka_service.bootstrap_servers, topic, unique_name("g"))

    assert (record.partition, record.offset) == (sent.partition, sent.offset)
    assert record.key == KEY
    assert record.value == VALUE
    assert list(record.headers) == HEADERS
    assert (record.timestamp, record.timestamp_type) == (TIMESTAMP_MS, 0)  # CreateTime


async def test_group_resumes_from_committed_offset(
    kafka_service: devstack.KafkaService,
    producer: AIOKafkaProducer,
    unique_name: Callable[[str], str],
) -> None:
    """A new member of a group starts after the offset its predecessor committed."""
    topic, group = unique_name("t"), unique_name("g")
    await _create_topic(kafka_service.bootstrap_servers, topic, partitions=3)
    assert await producer.partitions_for(topic) == {0, 1, 2}
    for value in (b"first", b"second"):
        await producer.send_and_wait(topic, value, partition=1)

    first = await _consume_one(kafka_service.bootstrap_servers, topic, group)
    second = await _consume_one(kafka_service.bootstrap_servers, topic, group)

    assert (first.value, second.value) == (b"first", b"second")


async def test_postgres_answers_over_tcp(database_url: str, db_schema: str) -> None:
    """PostgreSQL answers over TCP and stores bytes in the test's own schema."""
    assert re.match(r"postgres(ql)?://", database_url)
    connection = await asyncpg.connect(database_url)
    try:
        assert await connection.fetchval("SELECT inet_server_addr() IS NOT NULL")
        await connection.execute(f'CREATE TABLE "{db_schema}".blobs (data bytea)')
        await connection.execute(f'INSERT INTO "{db_schema}".blobs VALUES ($1)', VALUE)
        assert await connection.fetchval(f'SELECT data FROM "{db_schema}".blobs') == VALUE
    finally:
        await connection.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_wrong_bootstrap_fails_fast_naming_the_address() -> None:
    """A bootstrap address where nothing listens fails within the bound, naming the address."""
    bootstrap = f"127.0.0.1:{_closed_port()}"
    started = time.monotonic()

    with pytest.raises(ServiceUnavailableError, match=re.escape(bootstrap)) as caught:
        devstack.check_kafka_reachable(bootstrap, timeout=3.0)

    assert time.monotonic() - started < 3.0
    assert caught.value.address == bootstrap


async def test_aiokafka_fails_fast_on_wrong_bootstrap() -> None:
    """aiokafka itself gives up at once when nothing listens at the bootstrap address."""
    bootstrap = f"127.0.0.1:{_closed_port()}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    started = time.monotonic()

    with pytest.raises(KafkaConnectionError, match=re.escape(bootstrap.split(":")[1])):
        await producer.start()
    await producer.stop()

    assert time.monotonic() - started < 10.0
