"""One worker per assigned partition: handles its records in order, tracks done offsets."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import TopicPartition

from kafka_retry.message import Message
from kafka_retry.runtime._feed import Feed, Slot
from kafka_retry.runtime.dispatch import Dispatcher

log = logging.getLogger("kafka_retry")

# Records handled between two turns given to the rest of the event loop.
YIELD_EVERY = 256


class PartitionWorker(Feed):
    """Handles one partition's records strictly in order.

    An offset is *done* when its handler succeeded, or when its failure hand-off
    (retry topic, table or dead letter) was acknowledged. :meth:`position` is the
    offset to commit: the first offset not yet done.

    Args:
        tp: The partition.
        dispatcher: Runs handlers and starts hand-offs.
        max_pending: Hand-offs in flight before the worker waits for the oldest.
        on_drained: Called when the buffer falls to its low-water mark.
    """

    def __init__(
        self,
        tp: TopicPartition,
        dispatcher: Dispatcher,
        max_pending: int,
        on_drained: Callable[[TopicPartition], None],
    ) -> None:
        super().__init__(tp)
        self._dispatcher = dispatcher
        self._max_pending = max_pending
        self._on_drained = on_drained
        # Hand-offs not yet stored: each one's future and the slots it settles
        # (failures that ride one batch share a future: see retry/_tickets.py).
        self._handoffs: dict[asyncio.Future[None], list[Slot]] = {}
        #: Failures whose hand-off is not stored yet.
        self._unsettled = 0
        # Set when a hand-off ends: waiting on it is O(1), where asyncio.wait on
        # max_pending futures registers and removes a callback on every one of them.
        self._handoff_ended = asyncio.Event()
        self._error: BaseException | None = None

    async def _run(self) -> None:
        dispatcher = self._dispatcher
        make_message = dispatcher.message
        tp = self.tp
        # One partition of one topic: its handler call is fixed.
        invoke = dispatcher.caller(dispatcher.main_topic_of(tp.topic))
        hand_off = dispatcher.hand_off
        max_pending = self._max_pending
        partition = tp.partition
        while not self._closing:
            self._raise_handoff_error()
            if not self._batches:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = self._batches.popleft()
            budget = YIELD_EVERY
            try:
                # The hot loop: one Message and one handler call per record.
                for record in batch:
                    if self._closing:
                        break
                    offset = record.offset
                    if record.__class__ is Message:  # built by the main tier's fetcher
                        message = record
                    else:
                        message = make_message(
                            record.topic, partition, offset, record.key, record.value,
                            record.headers, record.timestamp,
                        )  # fmt: skip
                    error = await invoke(message)
                    if error is not None:
                        if self._unsettled >= max_pending:
                            await self._room()
                        self._track(offset, hand_off(message, error))
                    self._upto = offset + 1
                    budget -= 1
                    if not budget:
                        # Handlers that never await would otherwise hold the loop for
                        # the whole batch: no commit, heartbeat or hand-off meanwhile.
                        budget = YIELD_EVERY
                        await asyncio.sleep(0)
            finally:
                self.buffered -= len(batch)
            self._raise_handoff_error()
            self._on_drained(tp)

    async def _room(self) -> None:
        """Wait until fewer than ``max_pending`` failures wait for their hand-off."""
        while self._unsettled >= self._max_pending:
            self._handoff_ended.clear()
            await self._handoff_ended.wait()
            self._raise_handoff_error()

    def _track(self, offset: int, handoff: asyncio.Future[None]) -> None:
        """Hold ``offset`` undone until ``handoff`` (its failure's hand-off) is stored."""
        self._raise_handoff_error()
        slot = Slot(offset)
        self._slots.append(slot)
        self._unsettled += 1
        riders = self._handoffs.get(handoff)
        if riders is None:
            self._handoffs[handoff] = [slot]
            handoff.add_done_callback(self._settled)
        else:
            riders.append(slot)

    def _settled(self, handoff: asyncio.Future[None]) -> None:
        slots = self._handoffs.pop(handoff)
        self._unsettled -= len(slots)
        self._handoff_ended.set()
        if handoff.cancelled():
            return
        error = handoff.exception()
        if error is None:
            for slot in slots:
                slot.done = True
        elif self._error is None:
            self._error = error
            self._wakeup.set()  # an idle worker must not sit on it: the partition would stall

    def _raise_handoff_error(self) -> None:
        if self._error is not None:
            raise self._error

    async def stop(self, drain_timeout: float) -> None:
        """Stop taking records; let the running handler and hand-offs finish in ``drain_timeout``.

        What does not finish in time is cancelled and will be redelivered.
        """
        self._closing = True
        self._batches.clear()
        self._wakeup.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout
        if self._task is not None:
            if self._dispatcher.held_at_breaker(self._task):
                # Its record waits for an open breaker: no handler runs, nothing
                # is to be waited for. It is redelivered to the next owner.
                self._task.cancel()
            # The record being handled may still fail and start one more hand-off,
            # which must be waited for too: else it is redelivered (and duplicated).
            await asyncio.wait({self._task}, timeout=drain_timeout)
        pending: set[asyncio.Future[None]] = set(self._handoffs)
        if self._task is not None:
            pending.add(self._task)
        if pending:
            left = max(0.0, deadline - loop.time())
            _done, late = await asyncio.wait(pending, timeout=left)
            for task in late:
                task.cancel()
            if late:
                log.warning(
                    "%s: %d hand-off(s) or call(s) cancelled at drain timeout", self.tp, len(late)
                )
                await asyncio.wait(late)
        self.buffered = 0

    def crashed(self) -> BaseException | None:
        """The exception that ended the worker task, if it ended with one."""
        task = self._task
        if task is None or not task.done() or task.cancelled():
            return self._error
        return task.exception() or self._error
