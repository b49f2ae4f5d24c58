"""The partition worker of a topic with a batch handler (``ordering="partition"``).

It handles the partition's records in batches, one batch after another, in
offset order: a batch is what is queued when the worker takes its first
record, plus what arrives within ``max_wait`` seconds of that, up to
``max_size`` records. Offsets follow the per-message rule: a record is done
when the batch call succeeded for it, or when its own failure hand-off was
acknowledged, and the commit position is the first offset not done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka import ConsumerRecord, TopicPartition

from kafka_retry._batch import BatchHandler
from kafka_retry._clock import Clock
from kafka_retry.runtime.dispatch import BatchCall, Dispatcher
from kafka_retry.runtime.partition import YIELD_EVERY, PartitionWorker

__all__ = ["BatchPartitionWorker"]


class BatchPartitionWorker(PartitionWorker):
    """Handles one partition's records in batches, strictly in order.

    Args:
        tp: The partition.
        dispatcher: Runs the batch handler and starts hand-offs.
        max_pending: Hand-offs in flight before the worker waits for the oldest.
        on_drained: Called when the buffer falls to its low-water mark.
        clock: Times ``max_wait``.
        spec: The batch handler and its limits.
    """

    def __init__(
        self,
        tp: TopicPartition,
        dispatcher: Dispatcher,
        max_pending: int,
        on_drained: Callable[[TopicPartition], None],
        clock: Clock,
        spec: BatchHandler,
    ) -> None:
        super().__init__(tp, dispatcher, max_pending, on_drained)
        self._clock = clock
        self._max_size = spec.max_size
        self._max_wait = spec.max_wait
        self._budget = YIELD_EVERY
        # Records of the oldest queued batch taken already: a fetch of thousands
        # is cut into batches by position, not copied again at every cut.
        self._head_taken = 0

    async def _run(self) -> None:
        dispatcher = self._dispatcher
        call = dispatcher.batch_caller(dispatcher.main_topic_of(self.tp.topic))
        while not self._closing:
            self._raise_handoff_error()
            if not self._batches:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            records = await self._gather()
            try:
                if self._closing:
                    break  # not handled, not done: redelivered to the next owner
                self._raise_handoff_error()
                await self._handle(call, records)
            finally:
                self.buffered -= len(records)
            self._raise_handoff_error()
            self._on_drained(self.tp)

    async def _gather(self) -> list[ConsumerRecord]:
        """The next batch: queued records, and those that come within ``max_wait`` of the first."""
        taken: list[ConsumerRecord] = []
        deadline = self._clock.time() + self._max_wait
        while len(taken) < self._max_size and not self._closing:
            if self._batches:
                chunk = self._take(self._max_size - len(taken))
                if taken:
                    taken.extend(chunk)
                else:
                    taken = chunk
                continue
            remaining = deadline - self._clock.time()
            if remaining <= 0:
                break
            # Waiting for more: a partition paused for back-pressure must fetch again
            # now, not after this batch, or the batch waits for records never fetched.
            self._on_drained(self.tp)
            self._wakeup.clear()
            timer = self._clock.call_later(remaining, self._wakeup.set)
            try:
                await self._wakeup.wait()
            finally:
                timer.cancel()
            if self._error is not None:
                break  # a hand-off failed for good: the worker raises it next
        return taken

    def _take(self, count: int) -> list[ConsumerRecord]:
        """Up to ``count`` records from the oldest fetched batch; the rest stays queued first."""
        head = self._batches[0]
        start = self._head_taken
        end = start + count
        if end < len(head):
            self._head_taken = end
            return head[start:end]
        self._batches.popleft()
        self._head_taken = 0
        return head[start:] if start else head

    async def _handle(self, call: BatchCall, records: list[ConsumerRecord]) -> None:
        dispatcher = self._dispatcher
        messages = dispatcher.messages(self.tp.topic, self.tp.partition, records)
        errors = await call(messages)
        if errors is not None:
            for message, error in zip(messages, errors, strict=True):
                if error is not None:
                    if self._unsettled >= self._max_pending:
                        await self._room()
                    self._track(message.offset, dispatcher.hand_off(message, error))
        self._upto = records[-1].offset + 1
        self._budget -= len(records)
        if self._budget <= 0:
            # A batch handler that never awaits would otherwise hold the loop: no
            # commit, heartbeat or hand-off meanwhile.
            self._budget = YIELD_EVERY
            await asyncio.sleep(0)
