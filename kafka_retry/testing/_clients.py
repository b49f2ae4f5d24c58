"""In-memory admin client and producer, and the transport that hands out all three clients."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, ProducerClosed
from aiokafka.structs import RecordMetadata

from kafka_retry.config import Config
from kafka_retry.message import Header
from kafka_retry.testing._broker import MemoryBroker
from kafka_retry.testing._consumer import MemoryConsumer

__all__ = ["MemoryAdmin", "MemoryProducer", "MemoryTransport"]

_UNKNOWN_TOPIC = 3


@attrs.frozen
class CreateTopicsResult:
    """What :meth:`MemoryAdmin.create_topics` returns: ``(name, error code, message)`` each."""

    topic_errors: list[tuple[str, int, str | None]]


class MemoryAdmin:
    """``AIOKafkaAdminClient`` on a :class:`MemoryBroker`: list, describe, create topics."""

    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker

    async def start(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to close."""

    async def list_topics(self) -> list[str]:
        """The names of all topics."""
        return self._broker.topics()

    async def describe_topics(self, topics: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Metadata of ``topics`` (all by default), with Kafka's error code 3 for unknown ones."""
        described = []
        for topic in self._broker.topics() if topics is None else topics:
            if not self._broker.has_topic(topic):
                described.append(
                    {
                        "error_code": _UNKNOWN_TOPIC,
                        "topic": topic,
                        "is_internal": False,
                        "partitions": [],
                    }
                )
                continue
            partitions = [
                {"error_code": 0, "partition": index, "leader": 0, "replicas": [0], "isr": [0]}
                for index in range(self._broker.partitions(topic))
            ]
            described.append(
                {"error_code": 0, "topic": topic, "is_internal": False, "partitions": partitions}
            )
        return described

    async def describe_configs(
        self, config_resources: Iterable[ConfigResource]
    ) -> list[DescribeConfigsResult]:
        """The configs each topic was created with (the broker has no defaults to add).

        Only the names a resource asks for are given (all when it asks for none);
        an unknown topic gets Kafka's error code 3.
        """
        described: list[tuple[int, str | None, int, str, list[tuple[str, str]]]] = []
        topic = ConfigResourceType.TOPIC
        for resource in config_resources:
            name = resource.name
            if not self._broker.has_topic(name):
                described.append((_UNKNOWN_TOPIC, "unknown topic", topic, name, []))
                continue
            configs = self._broker.topic_configs(name)
            asked = resource.configs or configs
            entries = [(key, configs[key]) for key in asked if key in configs]
            described.append((0, None, topic, name, entries))
        return [DescribeConfigsResult(described)]

    async def create_topics(
        self,
        new_topics: Iterable[NewTopic],
        timeout_ms: int | None = None,
        validate_only: bool = False,
    ) -> CreateTopicsResult:
        """Create topics; errors are reported per topic, as the broker does."""
        errors: list[tuple[str, int, str | None]] = []
        for new in new_topics:
            try:
                if not validate_only:
                    self._broker.create_topic(new.name, new.num_partitions, new.topic_configs)
            except KafkaError as exc:
                errors.append((new.name, getattr(exc, "errno", -1), str(exc)))
            else:
                errors.append((new.name, 0, None))
        return CreateTopicsResult(errors)


@attrs.frozen
class DescribeConfigsResult:
    """What :meth:`MemoryAdmin.describe_configs` returns, shaped like Kafka's response.

    ``resources`` holds ``(error code, message, type, name, entries)`` per
    resource; each entry starts ``(config name, value)``.
    """

    resources: list[tuple[int, str | None, int, str, list[tuple[str, str]]]]


@attrs.define
class MemoryBatch:
    """Records for :meth:`MemoryProducer.send_batch`, like aiokafka's ``BatchBuilder``."""

    records: list[tuple[bytes | None, bytes | None, int | None, list[Header]]] = attrs.Factory(list)

    def append(
        self,
        *,
        timestamp: int | None,
        key: bytes | None,
        value: bytes | None,
        headers: Iterable[Header] = (),
    ) -> int:
        """Add a record; unlike ``send``, key and value may both be None.

        Returns its place in the batch (never None: a memory batch is never full).
        """
        self.records.append((key, value, timestamp, list(headers)))
        return len(self.records) - 1

    def close(self) -> None:
        """Nothing to close."""


class MemoryProducer:
    """``AIOKafkaProducer`` on a :class:`MemoryBroker`: every send is acknowledged at once."""

    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker
        self._closed = False

    async def start(self) -> None:
        """Nothing to connect to."""

    async def stop(self) -> None:
        """Refuse further sends; idempotent."""
        self._closed = True

    async def flush(self) -> None:
        """Nothing is ever buffered."""

    async def partitions_for(self, topic: str) -> set[int]:
        """The partition numbers of ``topic``."""
        return set(range(self._broker.partitions(topic)))

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Iterable[Header] | None = None,
    ) -> asyncio.Future[RecordMetadata]:
        """Append the record; return a future already holding its metadata.

        Raises:
            ProducerClosed: The producer was stopped.
            UnknownTopicOrPartitionError: No such topic or partition.
            TypeError: Key, value or a header value is not bytes (or None).
        """
        if self._closed:
            raise ProducerClosed()
        metadata = self._broker.append(
            topic,
            value,
            key=key,
            headers=headers,
            partition=partition,
            timestamp_ms=timestamp_ms,
        )
        future: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        future.set_result(metadata)
        return future

    def create_batch(self) -> MemoryBatch:
        """An empty batch for :meth:`send_batch`."""
        return MemoryBatch()

    async def send_batch(
        self, batch: MemoryBatch, topic: str, *, partition: int
    ) -> asyncio.Future[RecordMetadata]:
        """Append the batch's records to ``partition``; the future holds the last one's metadata.

        Raises:
            ProducerClosed: The producer was stopped.
            UnknownTopicOrPartitionError: No such topic or partition.
        """
        future: asyncio.Future[RecordMetadata] | None = None
        for key, value, timestamp_ms, headers in batch.records:
            future = await self.send(topic, value, key, partition, timestamp_ms, headers)
        assert future is not None, "an empty batch"
        return future

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Iterable[Header] | None = None,
    ) -> RecordMetadata:
        """:meth:`send` and wait for the acknowledgement."""
        future = await self.send(topic, value, key, partition, timestamp_ms, headers)
        return await future


class MemoryTransport:
    """Makes in-memory clients on one broker; pass it as ``Consumer(..., transport=...)``.

    Args:
        broker: The broker; a new one if omitted.
    """

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self.broker = broker or MemoryBroker()
        self._consumers: list[MemoryConsumer] = []

    def __repr__(self) -> str:
        return f"<MemoryTransport {self.broker!r}>"

    @property
    def consumers(self) -> list[MemoryConsumer]:
        """Every consumer this transport made, in order."""
        return list(self._consumers)

    def admin(self, config: Config) -> MemoryAdmin:
        """An admin client."""
        return MemoryAdmin(self.broker)

    def producer(self, config: Config) -> MemoryProducer:
        """A producer."""
        return MemoryProducer(self.broker)

    def consumer(self, config: Config, group_id: str, tier: str, reset: str) -> MemoryConsumer:
        """A group member for the runtime's tier ``tier``."""
        consumer = MemoryConsumer(
            self.broker, group_id, client_id=f"{config.client_id}-{tier}", auto_offset_reset=reset
        )
        self._consumers.append(consumer)
        return consumer

    def interrupt(self) -> None:
        """Make every waiting fetch return now (a stopping consumer then exits promptly)."""
        for consumer in self._consumers:
            consumer.interrupt()
