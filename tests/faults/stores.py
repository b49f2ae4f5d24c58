"""Producing a run's messages and reading back where they ended: lag, pending rows, dead letters."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import asyncpg
import attrs
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from kafka_retry import DatabaseConfig
from kafka_retry.message import split_headers
from kafka_retry.retry._pg_rows import decode_headers
from kafka_retry.retry.postgres import counts
from tests.faults.ledger import DeadLetter
from tests.faults.plan import Record, digest, message_id

# The 1 MB poison record, with its headers, must fit in a produce request.
_MAX_REQUEST = 4 * 1024 * 1024
_ERROR_TYPE = "kafka-retry-error-type"


async def create_topic(bootstrap: str, topic: str, partitions: int, replicas: int = 1) -> None:
    """Create ``topic`` with ``partitions`` partitions of ``replicas`` copies each."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, replicas)])
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, records: Sequence[Record]) -> None:
    """Produce ``records`` (acks=all, idempotent) and wait until every one is acknowledged."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_request_size=_MAX_REQUEST,
    )
    await producer.start()
    try:
        await asyncio.gather(*[await _send(producer, topic, record) for record in records])
    finally:
        await producer.stop()


async def _send(producer: AIOKafkaProducer, topic: str, record: Record) -> asyncio.Future[Any]:
    """Start sending ``record``; return the future of its acknowledgement."""
    if record.key is not None or record.value is not None:
        sent: asyncio.Future[Any] = await producer.send(
            topic,
            key=record.key,
            value=record.value,
            headers=list(record.headers),
            timestamp_ms=record.timestamp,
        )
        return sent
    # send() refuses a record without key and value, which Kafka accepts; a batch takes it.
    batch = producer.create_batch()
    batch.append(key=None, value=None, timestamp=record.timestamp, headers=list(record.headers))
    batch.close()
    partitions = sorted(await producer.partitions_for(topic))
    partition = partitions[record.fid % len(partitions)]
    future: asyncio.Future[Any] = await producer.send_batch(batch, topic, partition=partition)
    return future


async def _partitions(admin: AIOKafkaAdminClient, topic: str) -> list[TopicPartition]:
    """The partitions of an existing ``topic``.

    Raises:
        AssertionError: The topic does not exist (a check must never pass vacuously).
    """
    (described,) = await admin.describe_topics([topic])
    assert described["error_code"] == 0 and described["partitions"], f"no topic {topic}"
    return sorted(TopicPartition(topic, p["partition"]) for p in described["partitions"])


async def lag(bootstrap: str, groups: Sequence[tuple[str, str]]) -> int:
    """Records not yet committed, summed over ``(group, topic)`` pairs."""
    return sum((await lags(bootstrap, groups)).values())


async def lags(bootstrap: str, groups: Sequence[tuple[str, str]]) -> dict[TopicPartition, int]:
    """Records not yet committed per partition of the ``(group, topic)`` pairs."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await admin.start()
        behind: dict[TopicPartition, int] = {}
        for group, topic in groups:
            tps = await _partitions(admin, topic)
            ends = await consumer.end_offsets(tps)
            committed = await admin.list_consumer_group_offsets(group, partitions=tps)
            for tp in tps:
                done = committed.get(tp)
                behind[tp] = ends[tp] - max(0, done.offset if done is not None else 0)
        return behind
    finally:
        await admin.close()
        await consumer.stop()


@attrs.frozen
class Placement:
    """Where one partition's copies are.

    Attributes:
        leader: The node id of its leader (-1: none).
        replicas: The node ids holding a copy.
        isr: The node ids of the copies in sync.
    """

    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


async def placements(bootstrap: str, topics: Sequence[str]) -> dict[TopicPartition, Placement]:
    """The leader, replicas and in-sync replicas of every partition of ``topics``.

    Raises:
        AssertionError: A topic does not exist.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    found = {}
    for topic in described:
        assert topic["error_code"] == 0 and topic["partitions"], f"no topic {topic['topic']}"
        for partition in topic["partitions"]:
            found[TopicPartition(topic["topic"], partition["partition"])] = Placement(
                partition["leader"], tuple(partition["replicas"]), tuple(partition["isr"])
            )
    return found


async def topic_setting(bootstrap: str, topic: str, name: str) -> str | None:
    """The value of the setting ``name`` of ``topic`` (its own or the broker's default)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, {name: None})
        responses = await admin.describe_configs([resource])
    finally:
        await admin.close()
    for response in responses:
        for _code, _message, _kind, _name, entries in response.resources:
            for entry in entries:
                if entry[0] == name:
                    return str(entry[1])
    return None


async def pending_rows(database_url: str, database: DatabaseConfig, group: str) -> int:
    """Retry-table rows of ``group`` still waiting for a tier."""
    connection = await asyncpg.connect(database_url)
    try:
        return (await counts(connection, database, group)).total_pending
    finally:
        await connection.close()


async def unread(bootstrap: str, groups: Sequence[tuple[str, str]]) -> int:
    """Committed records past each group's committed offset, summed over ``(group, topic)``.

    The lag of :func:`lag` for topics written in transactions: their commit
    markers take offsets that no consumer commits past.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await admin.start()
        behind = 0
        for group, topic in groups:
            tps = await _partitions(admin, topic)
            committed = await admin.list_consumer_group_offsets(group, partitions=tps)
            consumer.assign(tps)
            for tp in tps:
                done = committed.get(tp)
                consumer.seek(tp, max(0, done.offset if done is not None else 0))
            ends = await consumer.end_offsets(tps)
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                batches = await consumer.getmany(timeout_ms=500)
                behind += sum(len(batch) for batch in batches.values())
        return behind
    finally:
        await admin.close()
        await consumer.stop()


async def kafka_dead_letters(
    bootstrap: str, topic: str, isolation_level: str = "read_uncommitted"
) -> list[DeadLetter]:
    """Every record of the dead-letter topic ``topic``, from the start to the end.

    Any topic of a run's chain reads the same way (the retry topics too).
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_bytes=_MAX_REQUEST,
        max_partition_fetch_bytes=_MAX_REQUEST,
        isolation_level=isolation_level,
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        tps = await _partitions(admin, topic)
    finally:
        await admin.close()
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        found: list[DeadLetter] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                found.extend(_kafka_letter(record) for record in batch)
        return found
    finally:
        await consumer.stop()


def _kafka_letter(record: ConsumerRecord) -> DeadLetter:
    original, ours = split_headers(record.headers or ())
    return DeadLetter(
        fid=message_id(original),
        digest=digest(record.key, record.value, original, record.timestamp),
        error_type=ours.get(_ERROR_TYPE, b"").decode(),
    )


async def postgres_dead_letters(
    database_url: str, database: DatabaseConfig, group: str
) -> list[DeadLetter]:
    """Every dead-lettered row of ``group``."""
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT message_key, message_value, header_names, header_values,"
            " message_timestamp, last_error_type"
            f" FROM {database.qualified_table}"
            " WHERE consumer_group = $1 AND state = 'dead_lettered'",
            group,
        )
    finally:
        await connection.close()
    letters = []
    for row in rows:
        headers = decode_headers(row["header_names"], row["header_values"])
        letters.append(
            DeadLetter(
                fid=message_id(headers),
                digest=digest(
                    row["message_key"], row["message_value"], headers, row["message_timestamp"]
                ),
                error_type=row["last_error_type"],
            )
        )
    return letters


async def create_schema(database_url: str, schema: str) -> None:
    """Create an empty schema for one run's retry table."""
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await connection.close()
