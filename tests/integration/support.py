"""Helpers shared by the integration tests: topics, producing, reading back, waiting."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from kafka_retry import Config

Header = tuple[str, bytes | None]


def fresh(prefix: str = "t") -> str:
    """A topic or group name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def create_topics(bootstrap: str, *topics: str, partitions: int = 1) -> None:
    """Create ``topics`` with ``partitions`` partitions each."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
    finally:
        await admin.close()


async def produce(
    bootstrap: str,
    topic: str,
    records: Sequence[tuple[bytes | None, bytes | None, Sequence[Header]]],
    *,
    partition: int | None = None,
    compression: str | None = None,
) -> None:
    """Produce ``(key, value, headers)`` records and wait for their acks."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", compression_type=compression
    )
    await producer.start()
    try:
        futures = [
            await producer.send(topic, key=k, value=v, headers=list(h), partition=partition)
            for k, v, h in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_all(
    bootstrap: str, topic: str, count: int, within: float = 30
) -> list[ConsumerRecord]:
    """Read ``count`` records of ``topic`` from the beginning (fewer if the deadline passes)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    found: list[ConsumerRecord] = []
    deadline = time.monotonic() + within
    try:
        while len(found) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                found.extend(records)
    finally:
        await consumer.stop()
    return found


async def eventually(predicate: Callable[[], bool], within: float = 30) -> None:
    """Wait until ``predicate()`` holds; fail the test if the deadline passes first."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.05)


def config_for(kafka: Any, **fields: Any) -> Config:
    """A Config against the test broker (idempotence off where the broker rejects it)."""
    fields.setdefault("group", fresh("g"))
    fields.setdefault("commit_interval", 0.2)
    # Short group timeouts: Tansu holds a first JoinGroup for half the rebalance timeout.
    fields.setdefault("session_timeout_ms", 6000)
    fields.setdefault("drain_timeout", 2.0)
    # Never shorter than the drain, which a revoke may take (a ConfigError).
    fields.setdefault("rebalance_timeout_ms", max(4000, math.ceil(fields["drain_timeout"] * 1000)))
    fields.setdefault("idempotence", kafka.supports_idempotence)
    return Config(bootstrap_servers=kafka.bootstrap_servers, **fields)
