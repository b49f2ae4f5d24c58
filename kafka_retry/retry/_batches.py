"""Batched, pipelined produce: the records of one partition go out in one batch per round trip.

``producer.send()`` costs a round through aiokafka's accumulator per record.
Here records are appended to an open batch per (topic, partition); a sender
task per partition hands a batch to ``send_batch`` while the next one fills,
so a failure storm costs one produce request per partition and round trip,
and the producer keeps the order within a partition. Each record's future is
settled when its batch is acknowledged (or failed), never before.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any

from aiokafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from aiokafka.partitioner import murmur2

__all__ = ["TOO_LARGE", "BatchTooLarge", "PartitionBatches", "partition_for"]

TopicPartition = tuple[str, int]
#: Errors that resending the same record cannot fix; only a larger topic limit can.
TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError)


class BatchTooLarge(KafkaError):  # type: ignore[misc]
    """The broker refused a batch of several records as too large: send each one alone.

    Only a record refused on its own is too large for the topic.
    """


def partition_for(key: bytes | None, source_partition: int, partitions: Sequence[int]) -> int:
    """The partition a record goes to: by key as Kafka's default partitioner, else the source's.

    Keyed records land where ``producer.send()`` would put them (murmur2), so
    a key stays in one partition; records without a key keep their source
    partition's number (modulo the count), so a storm spreads like its source.
    """
    if key is not None:
        hashed: int = murmur2(key)
        return partitions[(hashed & 0x7FFFFFFF) % len(partitions)]
    return partitions[source_partition % len(partitions)]


class _Open:
    """A batch being filled, and the futures of its records."""

    __slots__ = ("builder", "waiters")

    def __init__(self, builder: Any) -> None:
        self.builder = builder
        self.waiters: list[asyncio.Future[None]] = []


class PartitionBatches:
    """Open batches per partition on one producer, each sent as soon as the last is on its way.

    Args:
        producer: A started ``AIOKafkaProducer`` (or anything with its
            ``create_batch`` and ``send_batch``).
    """

    def __init__(self, producer: Any) -> None:
        self._producer = producer
        self._queues: dict[TopicPartition, deque[_Open]] = {}
        self._senders: dict[TopicPartition, asyncio.Task[None]] = {}

    def add(
        self,
        tp: TopicPartition,
        key: bytes | None,
        value: bytes | None,
        timestamp: int | None,
        headers: list[tuple[str, bytes | None]],
    ) -> asyncio.Future[None] | None:
        """Append one record; return the future of its acknowledgement.

        None when the record does not fit even in an empty batch: the caller
        sends it alone (and learns from the broker whether it is too large).
        """
        queue = self._queues.get(tp)
        if queue is None:
            queue = self._queues[tp] = deque()
        if not queue:
            queue.append(_Open(self._producer.create_batch()))
        batch = queue[-1]
        if not self._append(batch, key, value, timestamp, headers):
            if not batch.waiters:
                return None
            batch = _Open(self._producer.create_batch())
            queue.append(batch)
            if not self._append(batch, key, value, timestamp, headers):
                return None
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        batch.waiters.append(waiter)
        if tp not in self._senders:
            self._senders[tp] = asyncio.create_task(self._send(tp, queue))
        return waiter

    @staticmethod
    def _append(
        batch: _Open,
        key: bytes | None,
        value: bytes | None,
        timestamp: int | None,
        headers: list[tuple[str, bytes | None]],
    ) -> bool:
        return (
            batch.builder.append(key=key, value=value, timestamp=timestamp, headers=headers)
            is not None
        )

    async def _send(self, tp: TopicPartition, queue: deque[_Open]) -> None:
        topic, partition = tp
        try:
            # One turn of the loop: the hand-offs started with this one add theirs.
            await asyncio.sleep(0)
            while queue:
                batch = queue.popleft()
                batch.builder.close()
                try:
                    # Waits while the partition's previous batch is in flight; the
                    # next one fills meanwhile.
                    delivery = await self._producer.send_batch(
                        batch.builder, topic, partition=partition
                    )
                except BaseException as exc:
                    _settle(batch.waiters, exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                delivery.add_done_callback(lambda done, w=batch.waiters: _delivered(w, done))
        finally:
            del self._senders[tp]
            for batch in queue:  # cancelled: nothing left may wait forever
                _settle(batch.waiters, asyncio.CancelledError())
            queue.clear()


def _delivered(waiters: list[asyncio.Future[None]], done: asyncio.Future[Any]) -> None:
    if done.cancelled():
        _settle(waiters, asyncio.CancelledError())
        return
    error = done.exception()
    if error is None:
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        return
    _settle(waiters, error)


def _settle(waiters: list[asyncio.Future[None]], error: BaseException) -> None:
    if len(waiters) > 1 and isinstance(error, TOO_LARGE):
        error = BatchTooLarge(str(error))
    for waiter in waiters:
        if waiter.done():
            continue
        if isinstance(error, asyncio.CancelledError):
            waiter.cancel()
        else:
            waiter.set_exception(error)
