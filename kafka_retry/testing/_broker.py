"""The in-memory broker: topics, append-only partition logs, consumer groups."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import InvalidTopicError, TopicAlreadyExistsError, UnknownTopicOrPartitionError
from aiokafka.partitioner import murmur2
from aiokafka.structs import RecordMetadata

from kafka_retry._clock import Clock, SystemClock
from kafka_retry.message import Header
from kafka_retry.testing._group import ConsumerGroup

__all__ = ["MemoryBroker"]

# Kafka's own rule for topic names; a real broker refuses anything else.
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_CREATE_TIME = 0
_Bytes = bytes | bytearray | memoryview


def _as_bytes(what: str, value: object) -> bytes | None:
    # Without serializers aiokafka sends bytes only; refusing str here catches
    # the same mistake the real client would.
    if value is None:
        return None
    if isinstance(value, _Bytes):
        return bytes(value)
    raise TypeError(f"{what} must be bytes or None, not {type(value).__name__}")


def _headers(headers: Iterable[Header] | None) -> tuple[Header, ...]:
    result: list[Header] = []
    for item in headers or ():
        name, value = item
        if not isinstance(name, str):
            raise TypeError(f"header name must be str, not {type(name).__name__}")
        result.append((name, _as_bytes(f"header {name!r} value", value)))
    return tuple(result)


class MemoryBroker:
    """A Kafka broker in memory, for tests: no network, no threads.

    Records are kept byte-exact with offsets, CreateTime timestamps (the
    producer's, else now on ``clock``), keys and headers. Keyed records land on
    the partition aiokafka's default partitioner picks; records without a key
    go round-robin. Consumer groups keep committed offsets and share partitions
    among their members. Nothing is ever deleted.

    Args:
        clock: Time source for timestamps; pass the consumer's virtual clock.
        default_partitions: Partitions of a topic created without a count.
    """

    def __init__(self, *, clock: Clock | None = None, default_partitions: int = 1) -> None:
        if default_partitions < 1:
            raise ValueError("default_partitions must be >= 1")
        self.clock: Clock = clock or SystemClock()
        self._default_partitions = default_partitions
        self._logs: dict[str, list[list[ConsumerRecord]]] = {}
        self._round_robin: dict[str, int] = {}
        self._configs: dict[str, dict[str, str]] = {}
        self._groups: dict[str, ConsumerGroup] = {}
        self._version = 0

    def __repr__(self) -> str:
        return f"<MemoryBroker topics={len(self._logs)} groups={len(self._groups)}>"

    @property
    def version(self) -> int:
        """A counter that changes with every append, fetch, commit and group change."""
        return self._version

    def touch(self) -> None:
        """Record that something changed (called by the in-memory clients)."""
        self._version += 1

    # Topics

    def create_topic(
        self, name: str, partitions: int | None = None, configs: Mapping[str, str] | None = None
    ) -> None:
        """Create topic ``name`` with ``partitions`` partitions and topic ``configs``.

        The configs (``retention.ms``, ...) are kept for :meth:`topic_configs`;
        none of them changes what the broker does.

        Raises:
            TopicAlreadyExistsError: It exists.
            InvalidTopicError: The name breaks Kafka's rules, or partitions < 1.
        """
        count = self._default_partitions if partitions is None or partitions == -1 else partitions
        if not isinstance(name, str) or not _TOPIC_NAME.match(name) or name in (".", ".."):
            raise InvalidTopicError(f"invalid topic name {name!r}")
        if count < 1:
            raise InvalidTopicError(f"topic {name!r}: partitions must be >= 1, got {count}")
        if name in self._logs:
            raise TopicAlreadyExistsError(f"topic {name!r} already exists")
        self._logs[name] = [[] for _ in range(count)]
        self._configs[name] = dict(configs or {})
        self.touch()
        for group in self._groups.values():
            group.topic_created(name)

    def ensure_topic(self, name: str, partitions: int | None = None) -> None:
        """Create topic ``name`` unless it exists (its partition count is then kept)."""
        if name not in self._logs:
            self.create_topic(name, partitions)

    def topics(self) -> list[str]:
        """The names of all topics, sorted."""
        return sorted(self._logs)

    def partitions(self, topic: str) -> int:
        """How many partitions ``topic`` has.

        Raises:
            UnknownTopicOrPartitionError: No such topic.
        """
        return len(self._partition_logs(topic))

    def has_topic(self, topic: str) -> bool:
        """Whether ``topic`` exists."""
        return topic in self._logs

    def topic_configs(self, topic: str) -> dict[str, str]:
        """The configs ``topic`` was created with (a copy).

        Raises:
            UnknownTopicOrPartitionError: No such topic.
        """
        self._partition_logs(topic)
        return dict(self._configs[topic])

    # Records

    def append(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Iterable[Header] | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        """Append one record and wake the consumers of its topic.

        Returns:
            Where it went: topic, partition, offset, timestamp.

        Raises:
            UnknownTopicOrPartitionError: No such topic or partition.
            TypeError: Key, value or a header value is not bytes (or None).
        """
        logs = self._partition_logs(topic)
        key_bytes = _as_bytes("key", key)
        record_value = _as_bytes("value", value)
        record_headers = _headers(headers)
        if partition is None:
            partition = self._partition_for(topic, key_bytes, len(logs))
        elif not 0 <= partition < len(logs):
            raise UnknownTopicOrPartitionError(f"topic {topic!r} has no partition {partition}")
        timestamp = int(self.clock.time() * 1000) if timestamp_ms is None else int(timestamp_ms)
        log = logs[partition]
        record: ConsumerRecord = ConsumerRecord(
            topic=topic,
            partition=partition,
            offset=len(log),
            timestamp=timestamp,
            timestamp_type=_CREATE_TIME,
            key=key_bytes,
            value=record_value,
            checksum=None,
            serialized_key_size=-1 if key_bytes is None else len(key_bytes),
            serialized_value_size=-1 if record_value is None else len(record_value),
            headers=record_headers,
        )
        log.append(record)
        self.touch()
        for group in self._groups.values():
            group.records_arrived(topic)
        tp = TopicPartition(topic, partition)
        return RecordMetadata(topic, partition, tp, record.offset, timestamp, _CREATE_TIME, 0)

    def _partition_for(self, topic: str, key: bytes | None, count: int) -> int:
        if key is not None:
            hashed: int = murmur2(key)
            return (hashed & 0x7FFFFFFF) % count
        # Round-robin rather than aiokafka's random pick: tests stay repeatable.
        turn = self._round_robin.get(topic, 0)
        self._round_robin[topic] = turn + 1
        return turn % count

    def records(self, topic: str, partition: int | None = None) -> list[ConsumerRecord]:
        """The records of ``topic`` (one partition, or all: partition by partition).

        Raises:
            UnknownTopicOrPartitionError: No such topic or partition.
        """
        logs = self._partition_logs(topic)
        if partition is not None:
            return list(self.log(TopicPartition(topic, partition)))
        return [record for log in logs for record in log]

    def log(self, tp: TopicPartition) -> Sequence[ConsumerRecord]:
        """The log of one partition (do not modify it).

        Raises:
            UnknownTopicOrPartitionError: No such topic or partition.
        """
        logs = self._partition_logs(tp.topic)
        if not 0 <= tp.partition < len(logs):
            raise UnknownTopicOrPartitionError(
                f"topic {tp.topic!r} has no partition {tp.partition}"
            )
        return logs[tp.partition]

    def end_offset(self, topic: str, partition: int = 0) -> int:
        """The offset the next record of that partition will get."""
        return len(self.log(TopicPartition(topic, partition)))

    def _partition_logs(self, topic: str) -> list[list[ConsumerRecord]]:
        try:
            return self._logs[topic]
        except KeyError:
            raise UnknownTopicOrPartitionError(f"unknown topic {topic!r}") from None

    # Groups

    def group(self, group_id: str) -> ConsumerGroup:
        """The consumer group ``group_id`` (created empty on first use)."""
        group = self._groups.get(group_id)
        if group is None:
            group = self._groups[group_id] = ConsumerGroup(group_id, self)
        return group

    def groups(self) -> list[str]:
        """The ids of groups that have members or committed offsets, sorted."""
        return sorted(gid for gid, g in self._groups.items() if g.members or g.committed)

    def committed(self, group_id: str, topic: str, partition: int = 0) -> int | None:
        """The offset ``group_id`` committed for the partition, or None."""
        group = self._groups.get(group_id)
        if group is None:
            return None
        return group.committed.get(TopicPartition(topic, partition))
