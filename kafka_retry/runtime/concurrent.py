"""Concurrent handling within a partition, for ``ordering="key"`` and ``ordering="none"``.

Every dispatched record takes a slot in offset order; a slot is done when its
handler succeeded or its failure hand-off was acknowledged. The partition's
commit position is the offset of the first slot not done, so a slow message
holds back the commit, never the other keys.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from aiokafka import ConsumerRecord, TopicPartition

from kafka_retry.message import Message
from kafka_retry.runtime._feed import Feed, Slot
from kafka_retry.runtime.dispatch import Dispatcher

log = logging.getLogger("kafka_retry")


class ConcurrentPartitionWorker(Feed):
    """Handles one partition's records concurrently, in order per key or not at all.

    Args:
        tp: The partition.
        dispatcher: Runs handlers and hands off failures.
        permits: The tier-wide bound on records taken but not yet done.
        by_key: Keep per-key order (records with a null key are independent).
        on_drained: Called when the buffer falls to its low-water mark.
        run_ahead: How many offsets past the oldest one not done may be taken.
    """

    def __init__(
        self,
        tp: TopicPartition,
        dispatcher: Dispatcher,
        permits: asyncio.Semaphore,
        by_key: bool,
        on_drained: Callable[[TopicPartition], None],
        run_ahead: int = 10_000,
    ) -> None:
        super().__init__(tp)
        self._dispatcher = dispatcher
        self._permits = permits
        self._by_key = by_key
        self._on_drained = on_drained
        self._run_ahead = run_ahead
        self._chains: dict[bytes, deque[tuple[ConsumerRecord, Slot]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._error: BaseException | None = None
        # Set when the oldest slot may have settled, while _run waits on the cap.
        self._settled: asyncio.Event | None = None
        self._reported: int | None = None

    async def _run(self) -> None:
        while not self._closing:
            if self._error is not None:
                raise self._error
            if not self._batches:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = self._batches.popleft()
            for index, record in enumerate(batch):
                await self._within_run_ahead(record.offset)
                await self._permits.acquire()
                if self._closing:
                    self._permits.release()
                    self.buffered -= len(batch) - index
                    break
                self._take(record)
                self.buffered -= 1
            self._on_drained(self.tp)

    async def _within_run_ahead(self, offset: int) -> None:
        """Wait while ``offset`` is too far past the oldest offset not done yet.

        One stuck handler must not let the others run on for ever: the slots
        behind it pile up and the commit stays where it is, so a restart would
        hand back everything since. Waiting here fills the buffer, and the tier
        pauses the partition.
        """
        oldest = self.position()
        while not self._closing and oldest is not None and offset - oldest >= self._run_ahead:
            if self._reported != oldest:
                self._reported = oldest
                log.warning(
                    "%s: offset %d is not done yet; holding the partition %d offsets past"
                    " it (max_run_ahead) until it is",
                    self.tp,
                    oldest,
                    self._run_ahead,
                    extra={"topic": self.tp.topic, "partition": self.tp.partition},
                )
            self._settled = asyncio.Event()
            await self._settled.wait()
            oldest = self.position()
        self._settled = None

    def _take(self, record: ConsumerRecord) -> None:
        slot = Slot(record.offset)
        self._slots.append(slot)
        self._upto = record.offset + 1
        key = record.key
        if not self._by_key or key is None:
            self._spawn(self._handle_one(record, slot))
            return
        chain = self._chains.get(key)
        if chain is not None:
            chain.append((record, slot))
            return
        self._chains[key] = deque([(record, slot)])
        self._spawn(self._handle_chain(key))

    def _spawn(self, work: object) -> None:
        task: asyncio.Task[None] = asyncio.create_task(work)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and self._error is None:
            self._error = task.exception()
            self._wakeup.set()

    async def _handle_chain(self, key: bytes) -> None:
        chain = self._chains[key]
        try:
            while chain:
                record, slot = chain.popleft()
                await self._handle_one(record, slot)
        finally:
            if self._chains.get(key) is chain:
                del self._chains[key]
            # Records still queued on a cancelled chain give back their permits.
            for _ in range(len(chain)):
                self._permits.release()

    async def _handle_one(self, record: ConsumerRecord, slot: Slot) -> None:
        try:
            dispatcher = self._dispatcher
            if record.__class__ is Message:  # built by the main tier's fetcher
                message: Message = record
            else:
                message = dispatcher.message(
                    record.topic,
                    record.partition,
                    record.offset,
                    record.key,
                    record.value,
                    record.headers,
                    record.timestamp,
                )
            error = await dispatcher.invoke(message)
            if error is not None:
                await dispatcher.route(dispatcher.failure(message, error))
            slot.done = True
            if self._settled is not None:
                self._settled.set()
        finally:
            self._permits.release()

    async def stop(self, drain_timeout: float) -> None:
        """Stop taking records; let running handlers finish in ``drain_timeout``; cancel others."""
        self._closing = True
        self._batches.clear()
        self._wakeup.set()
        if self._settled is not None:
            self._settled.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._tasks:
            _done, late = await asyncio.wait(set(self._tasks), timeout=drain_timeout)
            for task in late:
                task.cancel()
            if late:
                log.warning("%s: %d handler(s) cancelled at drain timeout", self.tp, len(late))
                await asyncio.wait(late)
        self.buffered = 0

    def crashed(self) -> BaseException | None:
        """The exception that ended a handler task, if any did."""
        return self._error
