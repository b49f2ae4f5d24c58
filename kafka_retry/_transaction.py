"""A tier's Kafka transaction (``exactly_once``): hand-offs join it, the tier's commit ends it.

The forwarder of a tier sends each hand-off inside :meth:`TierTransaction.joined`;
the tier commits with :meth:`TierTransaction.held` then :meth:`TierTransaction.commit`:
no hand-off enters meanwhile, and every one already in has been acknowledged,
so the offsets sent with the transaction can cover all its records
(``runtime/_txcommit.py`` is the commit).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import TopicPartition

from kafka_retry.message import Message

__all__ = ["TierTransaction"]


class TierTransaction:
    """The open transaction of one tier's transactional producer.

    A transaction is always open (begun at start and after every end), so a
    hand-off never waits for one to begin.

    Args:
        producer: The tier's transactional producer, started, a transaction begun.
        group_id: The tier's consumer group, whose offsets the transaction commits.
        name: The transactional id, for messages.
    """

    def __init__(self, producer: Any, group_id: str, name: str) -> None:
        self.producer = producer
        self.group_id = group_id
        self.name = name
        self._open = asyncio.Event()
        self._open.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._sending = 0
        # A revoke (in aiokafka's coordinator task) and the poll loop's periodic
        # commit may want to end the transaction at the same time: one at a time.
        self._ending = asyncio.Lock()
        #: Highest source offset per partition whose hand-off joined this transaction.
        self.sent: dict[TopicPartition, int] = {}
        #: Why the last end failed: the producer cannot end transactions any more.
        self.failed: BaseException | None = None

    @contextlib.asynccontextmanager
    async def joined(self, message: Message) -> AsyncIterator[None]:
        """Send ``message``'s hand-off in the open transaction; waits while a commit holds it."""
        while not self._open.is_set():
            await self._open.wait()
        self._sending += 1
        self._idle.clear()
        tp = TopicPartition(message.topic, message.partition)
        # Counted before the send: a send interrupted half-way may be in the
        # transaction, so its offset must be done before it can commit.
        self.sent[tp] = max(self.sent.get(tp, -1), message.offset)
        try:
            yield
        finally:
            self._sending -= 1
            if not self._sending:
                self._idle.set()

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Closed to new hand-offs for the block (those in flight go on: see :meth:`idle`).

        One block at a time: a second waits for the first to end.
        """
        async with self._ending:
            self._open.clear()
            try:
                yield
            finally:
                self._open.set()

    async def idle(self) -> None:
        """Return once no hand-off is in flight."""
        await self._idle.wait()

    def covered(self, positions: dict[TopicPartition, int | None]) -> bool:
        """Whether every hand-off in the transaction is below its partition's done position."""
        for tp, offset in self.sent.items():
            position = positions.get(tp)
            if position is None or position <= offset:
                return False
        return True

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit the hand-offs with ``offsets`` (call within :meth:`held`); begin the next.

        Raises:
            KafkaError: The transaction could not commit (fenced, timed out, ...).
        """
        producer = self.producer
        try:
            if offsets:
                await producer.send_offsets_to_transaction(offsets, self.group_id)
            await producer.commit_transaction()
        except BaseException as exc:
            self.failed = exc
            raise
        self.sent.clear()
        await producer.begin_transaction()

    async def abort(self) -> None:
        """Drop every hand-off of the transaction (call within :meth:`held`); begin the next.

        Raises:
            KafkaError: The transaction could not abort.
        """
        try:
            await self.producer.abort_transaction()
        except BaseException as exc:
            self.failed = exc
            raise
        self.sent.clear()
        await self.producer.begin_transaction()
