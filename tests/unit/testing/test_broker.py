"""MemoryBroker, its admin client and producer: topics, byte-exact logs, partitioning."""

from __future__ import annotations

import pytest
from aiokafka.admin import NewTopic
from aiokafka.errors import (
    InvalidTopicError,
    ProducerClosed,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from aiokafka.partitioner import DefaultPartitioner

from kafka_retry.testing import MemoryAdmin, MemoryBroker, MemoryProducer, VirtualClock

ODD = b"\xff\x00\xfe not utf-8 \x80"
HEADERS = [("trace", b"1"), ("trace", b"2"), ("bin", b"\x00\xff"), ("null", None)]


def test_records_are_kept_byte_exact_with_offsets_and_timestamps() -> None:
    """Key, value and headers (duplicates, null values) survive; offsets count up."""
    broker = MemoryBroker(clock=VirtualClock(start=1234.5678))
    broker.create_topic("t")
    first = broker.append("t", ODD, key=b"k", headers=HEADERS)
    second = broker.append("t", None, timestamp_ms=42)
    third = broker.append("t", b"")
    assert (first.offset, second.offset, third.offset) == (0, 1, 2)
    records = broker.records("t")
    assert (records[0].key, records[0].value, list(records[0].headers)) == (b"k", ODD, HEADERS)
    assert records[0].timestamp == 1234567
    assert (records[1].value, records[1].timestamp) == (None, 42)
    assert records[2].value == b""
    assert broker.end_offset("t") == 3


def test_keyed_records_land_where_aiokafka_would_put_them() -> None:
    """Key hashing matches aiokafka's default partitioner."""
    broker = MemoryBroker()
    broker.create_topic("t", 7)
    partitions = list(range(7))
    for key in (b"a", b"product-42", b"\x00\xff", b""):
        expected = DefaultPartitioner()(key, partitions, partitions)
        assert broker.append("t", b"v", key=key).partition == expected


def test_records_without_key_go_round_robin() -> None:
    """Null keys spread over the partitions in turn (repeatable, unlike random)."""
    broker = MemoryBroker()
    broker.create_topic("t", 3)
    assert [broker.append("t", b"v").partition for _ in range(4)] == [0, 1, 2, 0]


def test_text_instead_of_bytes_is_refused() -> None:
    """Like aiokafka without serializers, str keys, values and header values are errors."""
    broker = MemoryBroker()
    broker.create_topic("t")
    with pytest.raises(TypeError, match="value must be bytes"):
        broker.append("t", "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="header 'h' value"):
        broker.append("t", b"v", headers=[("h", "text")])  # type: ignore[list-item]


def test_topic_rules() -> None:
    """Unknown topics and partitions, duplicates and bad names are Kafka errors."""
    broker = MemoryBroker(default_partitions=2)
    broker.create_topic("ok.name_1-x")
    assert broker.partitions("ok.name_1-x") == 2
    with pytest.raises(TopicAlreadyExistsError):
        broker.create_topic("ok.name_1-x")
    with pytest.raises(InvalidTopicError):
        broker.create_topic("no spaces")
    with pytest.raises(UnknownTopicOrPartitionError):
        broker.append("missing", b"v")
    with pytest.raises(UnknownTopicOrPartitionError):
        broker.append("ok.name_1-x", b"v", partition=2)


async def test_admin_lists_describes_and_creates() -> None:
    """The admin client reports per-topic error codes the way the runtime reads them."""
    broker = MemoryBroker()
    broker.create_topic("a", 3)
    admin = MemoryAdmin(broker)
    await admin.start()
    assert await admin.list_topics() == ["a"]
    described = await admin.describe_topics(["a", "b"])
    assert [(d["topic"], d["error_code"], len(d["partitions"])) for d in described] == [
        ("a", 0, 3),
        ("b", 3, 0),
    ]
    result = await admin.create_topics(
        [NewTopic("b", 2, 1), NewTopic("a", 1, 1), NewTopic("?", 1, 1)]
    )
    assert [(name, code) for name, code, _ in result.topic_errors] == [
        ("b", 0),
        ("a", 36),
        ("?", 17),
    ]
    assert broker.partitions("b") == 2
    await admin.close()


async def test_producer_acknowledges_at_once_and_refuses_after_stop() -> None:
    """send() returns a done future with the metadata; a stopped producer refuses."""
    broker = MemoryBroker()
    broker.create_topic("t", 2)
    producer = MemoryProducer(broker)
    await producer.start()
    future = await producer.send("t", b"v", key=b"k", headers=[("h", b"1")], timestamp_ms=7)
    assert future.done()
    metadata = await future
    assert (metadata.topic, metadata.offset, metadata.timestamp) == ("t", 0, 7)
    assert broker.records("t", metadata.partition)[0].headers == (("h", b"1"),)
    assert (await producer.send_and_wait("t", b"w", partition=1)).partition == 1
    assert await producer.partitions_for("t") == {0, 1}
    await producer.stop()
    with pytest.raises(ProducerClosed):
        await producer.send("t", b"late")
