"""An in-memory stand-in for ``AIOKafkaConsumer`` (the part the runtime uses, and a bit more)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, ConsumerStoppedError, IllegalStateError

from kafka_retry.testing._broker import MemoryBroker
from kafka_retry.testing._group import ConsumerGroup, new_member_id

__all__ = ["MemoryConsumer"]

# Records one fetch returns per partition, like a bounded fetch size would.
_FETCH_MAX = 500


class MemoryConsumer:
    """A group member of a :class:`MemoryBroker`, with aiokafka's consumer interface.

    Differences from aiokafka, on purpose: fetches are instant and wake the
    moment records arrive; an exception in a rebalance listener is raised from
    :meth:`getmany` rather than logged, so a test sees it.

    Args:
        broker: The broker.
        group_id: The consumer group.
        client_id: Names the member (and this consumer in error messages).
        auto_offset_reset: Where a partition without a committed offset starts.
    """

    def __init__(
        self,
        broker: MemoryBroker,
        group_id: str,
        *,
        client_id: str = "memory-consumer",
        auto_offset_reset: str = "latest",
    ) -> None:
        if auto_offset_reset not in ("earliest", "latest"):
            raise ValueError(f"auto_offset_reset must be earliest or latest: {auto_offset_reset}")
        self._broker = broker
        self._group: ConsumerGroup = broker.group(group_id)
        self.client_id = client_id
        self._reset = auto_offset_reset
        self._member_id = new_member_id(client_id)
        self._topics: frozenset[str] = frozenset()
        self._listener: ConsumerRebalanceListener | None = None
        self._started = False
        self._closed = False
        self._joined = False
        self._generation = -1
        self._assigned: frozenset[TopicPartition] = frozenset()
        self._positions: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        self._wakeup = asyncio.Event()
        self._interrupted = False
        self._turn = 0

    def __repr__(self) -> str:
        return f"<MemoryConsumer {self.client_id!r} group={self._group.group_id!r}>"

    @property
    def member_id(self) -> str:
        """This member's id in its group."""
        return self._member_id

    @property
    def topics(self) -> frozenset[str]:
        """The subscribed topics."""
        return self._topics

    @property
    def group_id(self) -> str:
        """The consumer group."""
        return self._group.group_id

    def wake(self) -> None:
        """Make a waiting :meth:`getmany` look again."""
        self._wakeup.set()

    def interrupt(self) -> None:
        """Make the current (or next) :meth:`getmany` return at once, even with nothing."""
        self._interrupted = True
        self._wakeup.set()

    # Lifecycle

    async def start(self) -> None:
        """Connect (nothing to do) and join the group if subscribed."""
        if self._closed:
            raise ConsumerStoppedError()
        self._started = True
        self._join()

    async def stop(self) -> None:
        """Leave the group; idempotent. Committed offsets stay with the group."""
        if self._closed:
            return
        self._closed = True
        if self._joined:
            self._joined = False
            self._group.leave(self)
        self._assigned = frozenset()
        self._wakeup.set()

    def subscribe(
        self,
        topics: Iterable[str] = (),
        pattern: str | None = None,
        listener: ConsumerRebalanceListener | None = None,
    ) -> None:
        """Subscribe to ``topics``; a group rebalance assigns their partitions.

        Raises:
            ValueError: A pattern was given (not supported in memory) or no topics.
        """
        if pattern is not None:
            raise ValueError("pattern subscriptions are not supported in memory")
        self._topics = frozenset(topics)
        if not self._topics:
            raise ValueError("subscribe needs at least one topic")
        self._listener = listener
        self._join()

    def _join(self) -> None:
        if self._started and self._topics and not self._closed:
            self._joined = True
            self._group.join(self)

    # Positions

    def assignment(self) -> set[TopicPartition]:
        """The partitions this member holds now."""
        return set(self._assigned)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Fetch ``partition`` from ``offset`` next."""
        self._check_assigned(partition)
        if not isinstance(offset, int) or offset < 0:
            raise ValueError(f"offset must be an int >= 0, got {offset!r}")
        self._positions[partition] = offset
        self._broker.touch()
        self._wakeup.set()

    async def position(self, partition: TopicPartition) -> int:
        """The offset of the next record :meth:`getmany` returns for ``partition``."""
        self._check_assigned(partition)
        return self._positions[partition]

    def highwater(self, partition: TopicPartition) -> int:
        """The offset the next record of ``partition`` will get (always current in memory)."""
        self._check_assigned(partition)
        return len(self._broker.log(partition))

    async def committed(self, partition: TopicPartition) -> int | None:
        """The group's committed offset for ``partition``, or None."""
        return self._group.committed.get(partition)

    def pause(self, *partitions: TopicPartition) -> None:
        """Stop fetching ``partitions`` until :meth:`resume`."""
        for tp in partitions:
            self._check_assigned(tp)
        self._paused.update(partitions)
        self._broker.touch()

    def resume(self, *partitions: TopicPartition) -> None:
        """Fetch ``partitions`` again."""
        for tp in partitions:
            self._check_assigned(tp)
        self._paused.difference_update(partitions)
        self._broker.touch()
        self._wakeup.set()

    def paused(self) -> set[TopicPartition]:
        """The paused partitions."""
        return set(self._paused)

    def _check_assigned(self, tp: TopicPartition) -> None:
        if not isinstance(tp, TopicPartition):
            raise TypeError("partitions must be TopicPartition")
        if tp not in self._assigned:
            raise IllegalStateError(f"{tp} is not assigned to {self.client_id}")

    async def commit(self, offsets: Mapping[TopicPartition, Any] | None = None) -> None:
        """Commit ``offsets`` (offset, or (offset, metadata)); default: the fetch positions.

        Raises:
            CommitFailedError: A partition is not held by this member (rebalanced away).
        """
        if offsets is None:
            offsets = dict(self._positions)
        plain: dict[TopicPartition, int] = {}
        for tp, value in offsets.items():
            offset = value if isinstance(value, int) else value[0]
            if tp not in self._assigned:
                raise CommitFailedError(
                    f"{self.client_id} cannot commit {tp}: the group rebalanced it away"
                )
            plain[tp] = offset
        self._group.commit(plain)

    # Fetching

    async def getmany(
        self,
        *partitions: TopicPartition,
        timeout_ms: int = 0,
        max_records: int | None = None,
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Records fetched since the last call, waiting up to ``timeout_ms`` for some.

        Returns at once when records arrive, a paused partition is resumed, or
        the group rebalances (the listener runs inside this call, as in aiokafka).

        Raises:
            ConsumerStoppedError: The consumer was stopped.
        """
        if self._closed:
            raise ConsumerStoppedError()
        if not self._started:
            raise IllegalStateError(f"{self.client_id} is not started")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        while not self._closed:
            self._wakeup.clear()
            interrupted, self._interrupted = self._interrupted, False
            if self._joined and self._generation != self._group.generation:
                await self._rejoin()
                continue
            batch = self._fetch(set(partitions), max_records)
            remaining = deadline - loop.time()
            if batch or interrupted or remaining <= 0:
                return batch
            try:
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()
            except TimeoutError:
                return {}
        return {}

    def _fetch(
        self, only: set[TopicPartition], max_records: int | None
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        budget = max_records or _FETCH_MAX * max(1, len(self._assigned))
        order = sorted(self._assigned)
        if order:
            # Start each fetch at the next partition, so a busy one cannot starve the rest.
            self._turn = (self._turn + 1) % len(order)
            order = order[self._turn :] + order[: self._turn]
        batch: dict[TopicPartition, list[ConsumerRecord]] = {}
        for tp in order:
            if budget <= 0:
                break
            if tp in self._paused or (only and tp not in only):
                continue
            log = self._broker.log(tp)
            position = self._positions[tp]
            if position >= len(log):
                continue
            records = list(log[position : position + min(budget, _FETCH_MAX)])
            self._positions[tp] = position + len(records)
            budget -= len(records)
            batch[tp] = records
        if batch:
            self._broker.touch()
        return batch

    async def _rejoin(self) -> None:
        # As in aiokafka, revoke comes first on every join (with nothing, the first time).
        await self._call_listener("on_partitions_revoked", set(self._assigned))
        self._assigned = frozenset()
        self._positions.clear()
        self._paused.clear()
        generation, assigned = await self._group.sync(self)
        self._generation = generation
        self._assigned = assigned
        for tp in assigned:
            committed = self._group.committed.get(tp)
            if committed is None:
                committed = 0 if self._reset == "earliest" else len(self._broker.log(tp))
            self._positions[tp] = committed
        self._broker.touch()
        await self._call_listener("on_partitions_assigned", set(assigned))

    async def _call_listener(self, name: str, partitions: set[TopicPartition]) -> None:
        if self._listener is None:
            return
        result = getattr(self._listener, name)(partitions)
        if inspect.isawaitable(result):
            await result

    # Test support

    def pending_work(self) -> str | None:
        """Why this consumer is not idle, or None: a rebalance, or records not fetched yet.

        Paused partitions do not count: the runtime pauses a partition whose
        next record is not due yet, and resumes it from a clock timer.
        """
        if not self._joined or self._closed:
            return None
        if self._generation != self._group.generation:
            waiting = ", ".join(self._group.waiting_for()) or "none"
            return (
                f"{self.client_id}: group {self.group_id!r} is rebalancing "
                f"(not yet rejoined: {waiting})"
            )
        behind = []
        for tp in sorted(self._assigned - self._paused):
            end = len(self._broker.log(tp))
            if self._positions[tp] < end:
                behind.append(f"{tp.topic}[{tp.partition}] at {self._positions[tp]} of {end}")
        if behind:
            return f"{self.client_id}: records not fetched yet: {', '.join(behind)}"
        return None
