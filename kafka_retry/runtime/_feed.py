"""What both partition workers share: the queue of fetched batches and done-offset tracking."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections import deque

from aiokafka import ConsumerRecord, TopicPartition


def record_bytes(records: list[ConsumerRecord]) -> int:
    """The bytes of the records' keys and values (a Message from the fetcher counts alike)."""
    size = 0
    for record in records:
        key, value = record.key, record.value
        if key is not None:
            size += len(key)
        if value is not None:
            size += len(value)
    return size


class Slot:
    """An offset taken for handling whose outcome is not settled yet."""

    __slots__ = ("done", "offset")

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.done = False


class Feed(ABC):
    """Fetched batches waiting for a worker, and the partition's commit position.

    Subclasses run :meth:`_run` as the worker task, take batches from
    ``_batches``, append a :class:`Slot` for each offset whose outcome settles
    later, and advance ``_upto`` past each record taken.

    Args:
        tp: The partition.
    """

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self._batches: deque[list[ConsumerRecord]] = deque()
        #: Records queued here and not yet taken.
        self.buffered = 0
        self._wakeup = asyncio.Event()
        self._slots: deque[Slot] = deque()
        self._upto: int | None = None
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        """Start the worker task and return it."""
        self._task = asyncio.create_task(self._run(), name=f"kafka-retry:{self.tp}")
        return self._task

    def submit(self, records: list[ConsumerRecord]) -> None:
        """Queue fetched records (in offset order) for handling."""
        self._batches.append(records)
        self.buffered += len(records)
        self._wakeup.set()

    @property
    def waiting_batches(self) -> int:
        """Batches queued and not yet started."""
        return len(self._batches)

    def position(self) -> int | None:
        """The offset to commit: the first slot not done, else past the last record taken.

        None while nothing has been taken yet.
        """
        slots = self._slots
        while slots and slots[0].done:
            slots.popleft()
        if slots:
            return slots[0].offset
        return self._upto

    @abstractmethod
    async def _run(self) -> None:
        """The worker task."""
