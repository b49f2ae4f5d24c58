"""KafkaTier's rebalance bookkeeping, on a stand-in for the aiokafka consumer."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition

from kafka_retry import Config, Message
from kafka_retry._clock import SystemClock
from kafka_retry.runtime.dispatch import Handler
from kafka_retry.runtime.tier import KafkaTier
from tests.integration.support import eventually
from tests.unit.test_partition import dispatcher_for

TP = TopicPartition("t", 0)


class IdleConsumer:
    """Takes the calls a tier makes outside its poll loop, and does nothing."""

    def pause(self, *partitions: TopicPartition) -> None: ...

    def resume(self, *partitions: TopicPartition) -> None: ...


async def noop(message: Message) -> None: ...


def tier(consumer: Any = None, handler: Handler = noop, **settings: Any) -> KafkaTier:
    """A main tier of topic ``t`` on ``consumer`` (a stand-in), not polling."""
    config = Config(bootstrap_servers="b:9092", group="g", topics=["t"], metrics=False, **settings)
    dispatcher = dispatcher_for(config, handler, None)
    clock = SystemClock()
    return KafkaTier("main", config, consumer or IdleConsumer(), ["t"], dispatcher, None, clock)


async def test_an_assignment_starts_a_worker_per_partition() -> None:
    """Partitions assigned while running are held, each with a worker."""
    running = tier()
    running.assign({TP})
    assert running.assignment == {TP}
    await running.revoke({TP})
    assert running.assignment == frozenset()


async def test_an_assignment_during_shutdown_starts_no_worker() -> None:
    """A rebalance that assigns partitions while the tier stops starts nothing to leak."""
    stopping = tier()
    stopping.request_stop()
    stopping.assign({TP})
    assert stopping.assignment == frozenset()


class PausingConsumer(IdleConsumer):
    """Remembers which partitions the tier paused."""

    def __init__(self) -> None:
        self.paused: set[TopicPartition] = set()

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused.difference_update(partitions)


def big_record(offset: int, size: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="t",
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=None,
        value=b"x" * size,
        checksum=None,
        serialized_key_size=-1,
        serialized_value_size=size,
        headers=(),
    )


async def test_large_records_pause_the_partition_at_the_byte_bound() -> None:
    """Bytes, not only records, bound what a tier buffers: 100 KB records pause it early."""
    release = asyncio.Event()

    async def blocked(message: Message) -> None:
        await release.wait()

    consumer = PausingConsumer()
    feeding = tier(consumer, blocked, max_buffered_bytes=250_000)
    feeding.assign({TP})
    for offset in range(2):
        feeding._feed(TP, [big_record(offset, 100_000)])
    assert consumer.paused == set()  # 200 KB: under the bound
    feeding._feed(TP, [big_record(2, 100_000)])
    assert consumer.paused == {TP}  # 300 KB, far below max_in_flight records
    release.set()
    await eventually(lambda: consumer.paused == set())  # drained below half: resumed
    await feeding.revoke({TP})
