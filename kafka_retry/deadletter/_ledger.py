"""The replay ledger of the Kafka backend: which dead letters were replayed.

One compacted topic per main topic, named by the config's topic name generator
with the prefix ``deadLetterReplays`` (``deadLetterReplays.<group>.<topic>`` by
default). Key: ``PARTITION:OFFSET`` of the dead letter in its topic; value: a
JSON mark (fingerprint, time, destination). Compaction keeps one record per
dead letter; a purge writes tombstones for the dead letters it deleted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import NewTopic

from kafka_retry._kafka import partition_counts
from kafka_retry.config import Config
from kafka_retry.deadletter._reader import TopicReader
from kafka_retry.deadletter._replay import (
    Mark,
    decode_mark,
    encode_mark,
    ledger_key,
    parse_ledger_key,
)
from kafka_retry.errors import DeadLetterError

LEDGER_PREFIX = "deadLetterReplays"

Position = tuple[int, int]

_TOPIC_ALREADY_EXISTS = 36


def ledger_topic(config: Config, main_topic: str) -> str:
    """The ledger topic of ``main_topic``'s dead letters."""
    return config.topic_name_generator(config.group, main_topic, LEDGER_PREFIX)


class Ledger:
    """Reads and writes the replay ledgers.

    Args:
        config: The settings (group, naming, replication factor).
        admin: A started admin client.
        reader: Reads the ledger topics.
    """

    def __init__(self, config: Config, admin: Any, reader: TopicReader) -> None:
        self._config = config
        self._admin = admin
        self._reader = reader

    async def load(self, main_topic: str) -> dict[Position, Mark]:
        """The marks of ``main_topic``'s dead letters; empty when there is no ledger yet."""
        topic = ledger_topic(self._config, main_topic)
        counts = await partition_counts(self._admin, [topic])
        if topic not in counts:
            return {}
        marks: dict[Position, Mark] = {}
        partitions = [TopicPartition(topic, p) for p in range(counts[topic])]
        async for record in self._reader.scan(partitions):
            position = parse_ledger_key(record.key)
            if position is None:
                continue
            mark = decode_mark(record.value)
            if mark is None:
                marks.pop(position, None)
            else:
                marks[position] = mark
        return marks

    async def ensure(self, main_topic: str) -> str:
        """Create ``main_topic``'s ledger (compacted, one partition) unless it exists.

        Raises:
            DeadLetterError: The broker refused to create it.
        """
        topic = ledger_topic(self._config, main_topic)
        if topic in await partition_counts(self._admin, [topic]):
            return topic
        new = NewTopic(
            topic,
            1,
            self._config.replication_factor,
            topic_configs={"cleanup.policy": "compact"},
        )
        response = await self._admin.create_topics([new])
        for name, code, *rest in response.topic_errors:
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                detail = rest[0] if rest else ""
                raise DeadLetterError(f"could not create the replay ledger {name}: {code} {detail}")
        return topic

    async def write(
        self, producer: Any, main_topic: str, marks: Iterable[tuple[Position, Mark | None]]
    ) -> None:
        """Record ``marks`` (None writes a tombstone) and wait for the acks."""
        topic = ledger_topic(self._config, main_topic)
        sends = [
            await producer.send(
                topic,
                key=ledger_key(*position),
                value=None if mark is None else encode_mark(mark),
            )
            for position, mark in marks
        ]
        await asyncio.gather(*sends)
