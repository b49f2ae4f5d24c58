"""Batched, pipelined produce: the records of one partition go out in one batch per round trip.

``producer.send()`` costs a round through aiokafka's accumulator per record.
Here records are appended to an open batch per (topic, partition); a sender
task per partition hands a batch to ``send_batch`` while the next one fills,
so a failure storm costs one produce request per partition and round trip,
and the producer keeps the order within a partition. A batch's receipt is
settled when the batch is acknowledged (or failed), never before.
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

__all__ = ["TOO_LARGE", "Batch", "BatchTooLarge", "PartitionBatches", "partition_for"]

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


class Batch:
    """A batch being filled for one partition, and the future of its acknowledgement.

    Attributes:
        receipt: Done when the broker acknowledged the batch (or refused it:
            then its exception, :class:`BatchTooLarge` if it held several
            records and was too large).
        tickets: What the batch's riders share, per source (see :mod:`._tickets`).
    """

    __slots__ = ("builder", "count", "receipt", "tickets")

    def __init__(self, builder: Any) -> None:
        self.builder = builder
        self.count = 0
        self.receipt: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.tickets: dict[Any, Any] = {}


class PartitionBatches:
    """Open batches per partition on one producer, each sent as soon as the last is on its way.

    Args:
        producer: A started ``AIOKafkaProducer`` (or anything with its
            ``create_batch`` and ``send_batch``).
    """

    def __init__(self, producer: Any) -> None:
        self._producer = producer
        self._queues: dict[TopicPartition, deque[Batch]] = {}
        self._senders: dict[TopicPartition, asyncio.Task[None]] = {}

    def add(
        self,
        tp: TopicPartition,
        key: bytes | None,
        value: bytes | None,
        timestamp: int | None,
        headers: Sequence[tuple[str, bytes | None]],
    ) -> Batch | None:
        """Append one record; return the batch it joined (whose receipt says when it is stored).

        None when the record does not fit even in an empty batch: the caller
        sends it alone (and learns from the broker whether it is too large).
        """
        queue = self._queues.get(tp)
        if queue is None:
            queue = self._queues[tp] = deque()
        if not queue:
            queue.append(Batch(self._producer.create_batch()))
        batch = queue[-1]
        if batch.builder.append(key=key, value=value, timestamp=timestamp, headers=headers) is None:
            if not batch.count:
                return None
            batch = Batch(self._producer.create_batch())
            queue.append(batch)
            appended = batch.builder.append(
                key=key, value=value, timestamp=timestamp, headers=headers
            )
            if appended is None:
                return None
        batch.count += 1
        if tp not in self._senders:
            self._senders[tp] = asyncio.create_task(self._send(tp, queue))
        return batch

    async def _send(self, tp: TopicPartition, queue: deque[Batch]) -> None:
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
                    _settle(batch, exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                delivery.add_done_callback(lambda done, b=batch: _delivered(b, done))
        finally:
            del self._senders[tp]
            for batch in queue:  # cancelled: nothing left may wait forever
                _settle(batch, asyncio.CancelledError())
            queue.clear()


def _delivered(batch: Batch, done: asyncio.Future[Any]) -> None:
    if done.cancelled():
        _settle(batch, asyncio.CancelledError())
    elif (error := done.exception()) is not None:
        _settle(batch, error)
    elif not batch.receipt.done():
        batch.receipt.set_result(None)


def _settle(batch: Batch, error: BaseException) -> None:
    receipt = batch.receipt
    if receipt.done():
        return
    if isinstance(error, asyncio.CancelledError):
        receipt.cancel()
        return
    if batch.count > 1 and isinstance(error, TOO_LARGE):
        error = BatchTooLarge(str(error))
    receipt.set_exception(error)
    receipt.exception()  # its riders are told; unheard, it is no news for the loop's log
