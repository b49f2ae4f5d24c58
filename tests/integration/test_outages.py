"""When the downstream is down: batched hand-offs, in-place retries, the breaker, calm logs."""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from kafka_retry import CircuitBreaker, Consumer, DatabaseConfig, Message
from kafka_retry.message import split_headers

from .support import config_for, create_topics, eventually, fresh, produce, read_all

PARTITIONS = 6


def storm_records(count: int) -> list[tuple[bytes | None, bytes | None, list[Any]]]:
    """Records of every shape: null and empty keys and values, any bytes, repeated headers."""
    records: list[tuple[bytes | None, bytes | None, list[Any]]] = []
    for n in range(count):
        key = None if n % 5 == 0 else b"" if n % 7 == 0 else f"k{n % 13}".encode()
        value = b"" if n % 11 == 0 else bytes([n % 256, 0xFF, 0x00]) + b"v" * (n % 50)
        headers = [("h", b"\x00\xfe"), ("h", None)] if n % 3 == 0 else []
        records.append((key, value, headers))
    return records


async def end_offsets(bootstrap: str, topic: str, partitions: int) -> int:
    """The number of records in the ``partitions`` partitions of ``topic``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        return sum(ends.values())
    finally:
        await consumer.stop()


async def committed(bootstrap: str, group: str, topic: str) -> int:
    """The offsets ``group`` committed on ``topic``, summed over its partitions."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        total = 0
        for partition in range(PARTITIONS):
            total += await consumer.committed(TopicPartition(topic, partition)) or 0
        return total
    finally:
        await consumer.stop()


async def test_a_storm_reaches_the_retry_topic_byte_exact_and_commits_after(
    kafka_service: Any,
) -> None:
    """Batched hand-offs: every failed record lands on retry1 byte-exact; offsets follow."""
    bootstrap = kafka_service.bootstrap_servers
    topic = fresh()
    await create_topics(bootstrap, topic, partitions=PARTITIONS)
    records = storm_records(1200)
    await produce(bootstrap, topic, records)
    config = config_for(kafka_service, topics=[topic], retry_intervals=[3600])
    failed = 0

    async def failing(message: Message) -> None:
        nonlocal failed
        failed += 1
        raise RuntimeError("down")

    retry1 = config.topic_chain(topic)[1]
    async with Consumer(config, {topic: failing}):
        await eventually(lambda: failed == len(records), within=60)
    copies = await read_all(bootstrap, retry1, len(records), within=60)
    seen = Counter((r.key, r.value, tuple(split_headers(r.headers)[0])) for r in copies)
    assert seen == Counter((k, v, tuple(h)) for k, v, h in records)
    assert await committed(bootstrap, config.group, topic) == len(records)


async def test_a_blip_is_absorbed_in_place_on_kafka(kafka_service: Any) -> None:
    """A call that fails twice then succeeds is tried in place: nothing reaches retry1."""
    bootstrap = kafka_service.bootstrap_servers
    topic = fresh()
    await create_topics(bootstrap, topic)
    await produce(bootstrap, topic, [(b"k", b"v", [])])
    config = config_for(
        kafka_service,
        topics=[topic],
        retry_intervals=[0.2],
        blocking_retries=3,
        blocking_backoff=0.01,
    )
    calls: list[Message] = []

    async def blip(message: Message) -> None:
        calls.append(message)
        if len(calls) < 3:
            raise ConnectionError("blip")

    async with Consumer(config, {topic: blip}):
        await eventually(lambda: len(calls) == 3)
    assert [(m.attempt, m.blocking_attempt) for m in calls] == [(1, 1), (1, 2), (1, 3)]
    assert await end_offsets(bootstrap, config.topic_chain(topic)[1], 1) == 0


async def test_a_blip_is_absorbed_in_place_on_postgres(
    kafka_service: Any, database_url: str, db_schema: str
) -> None:
    """The same on the PostgreSQL backend: the retry table stays empty."""
    bootstrap = kafka_service.bootstrap_servers
    topic = fresh()
    await create_topics(bootstrap, topic)
    await produce(bootstrap, topic, [(b"k", b"v", [])])
    database = DatabaseConfig.from_url(database_url, schema=db_schema)
    config = config_for(
        kafka_service,
        topics=[topic],
        retry_intervals=[0.2],
        retry_backend="postgres",
        database=database,
        blocking_retries=2,
        blocking_backoff=0.01,
    )
    calls: list[Message] = []

    async def blip(message: Message) -> None:
        calls.append(message)
        if len(calls) < 3:
            raise ConnectionError("blip")

    async with Consumer(config, {topic: blip}):
        await eventually(lambda: len(calls) == 3)
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetchval(f"SELECT count(*) FROM {database.qualified_table}")
    finally:
        await connection.close()
    assert rows == 0
    assert [m.blocking_attempt for m in calls] == [1, 2, 3]


async def test_the_breaker_holds_calls_back_during_an_outage(kafka_service: Any) -> None:
    """A 10 s outage with 2,000 records waiting: under 300 calls, then all handled, none dead."""
    bootstrap = kafka_service.bootstrap_servers
    topic = fresh()
    await create_topics(bootstrap, topic, partitions=3)
    total = 2000
    await produce(bootstrap, topic, [(f"k{n}".encode(), str(n).encode(), []) for n in range(total)])
    config = config_for(
        kafka_service,
        topics=[topic],
        retry_intervals=[1, 1, 1],
        circuit_breaker=CircuitBreaker(
            failure_ratio=0.5, window=20, open_for=2.0, max_open_for=4.0
        ),
    )
    outage_ends: float | None = None
    during = 0
    handled: set[bytes] = set()

    async def downstream(message: Message) -> None:
        nonlocal outage_ends, during
        now = time.monotonic()
        if outage_ends is None:
            outage_ends = now + 10.0
        if now < outage_ends:
            during += 1
            raise ConnectionError("downstream is down")
        assert message.value is not None
        handled.add(message.value)

    async with Consumer(config, {topic: downstream}) as consumer:
        await eventually(lambda: len(handled) == total, within=90)
        health = await consumer.health()
    assert during < 300, during
    assert health.circuit_breakers == {topic: "closed"}
    assert await end_offsets(bootstrap, config.topic_chain(topic)[-1], 3) == 0


async def test_a_storm_logs_its_first_failures_then_summaries(
    kafka_service: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """500 failures: 5 WARNING lines in full, the rest at DEBUG and counted in summaries."""
    caplog.set_level(logging.DEBUG, logger="kafka_retry")
    bootstrap = kafka_service.bootstrap_servers
    topic = fresh()
    await create_topics(bootstrap, topic, partitions=2)
    total = 500
    await produce(bootstrap, topic, [(None, str(n).encode(), []) for n in range(total)])
    config = config_for(
        kafka_service,
        topics=[topic],
        retry_intervals=[3600],
        log_first_failures=5,
        log_summary_interval=0.5,
    )

    async def failing(message: Message) -> None:
        raise RuntimeError(f"down for {message.value!r}")

    def summarised() -> int:
        return sum(getattr(r, "failures", 0) for r in caplog.records if getattr(r, "summary", 0))

    async with Consumer(config, {topic: failing}):
        await eventually(lambda: summarised() == total - 5, within=60)
    failures = [r for r in caplog.records if r.getMessage().startswith("handler failed")]
    assert len(failures) == total
    assert sum(r.levelno == logging.WARNING for r in failures) == 5
    summaries = [r for r in caplog.records if getattr(r, "summary", False)]
    assert all(r.levelno == logging.WARNING for r in summaries)
    assert "RuntimeError" in summaries[-1].getMessage()
    assert "down for" in summaries[-1].getMessage()
