"""Reading topic partitions to their end, outside any consumer group."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import OffsetOutOfRangeError

from kafka_retry._kafka import common_kwargs, start_within_bound
from kafka_retry.config import Config
from kafka_retry.errors import DeadLetterError

Offsets = dict[TopicPartition, int]

# A partition that yields nothing for this long before its end was reached
# (say, a leader that went away) ends the read with an error, not a hang.
_IDLE_LIMIT = 15.0
_POLL_MS = 200


class TopicReader:
    """Reads partitions from their start (or given offsets) to their end (or given offsets).

    Uses one consumer without a group: nothing is committed, nobody rebalances.
    The end is where the broker says a partition ends, confirmed by a poll that
    brings nothing more: some brokers (Tansu) report an end before the last
    records of a batch.

    Args:
        consumer: A started ``AIOKafkaConsumer`` without a group id that does
            not reset out-of-range offsets (``auto_offset_reset="none"``).
    """

    def __init__(self, consumer: Any) -> None:
        self._consumer = consumer

    async def bounds(self, partitions: list[TopicPartition]) -> tuple[Offsets, Offsets]:
        """The first and the next-to-be-written offset of each partition."""
        consumer = self._consumer
        starts: Offsets = await consumer.beginning_offsets(partitions)
        ends: Offsets = await consumer.end_offsets(partitions)
        return starts, ends

    async def scan(
        self,
        partitions: list[TopicPartition],
        *,
        starts: Mapping[TopicPartition, int] | None = None,
        stops: Mapping[TopicPartition, int] | None = None,
        reached: Offsets | None = None,
    ) -> AsyncGenerator[Any, None]:
        """Yield the records of ``partitions`` from ``starts`` to ``stops`` (or the end).

        Records of different partitions interleave; within one they come in order.

        Args:
            partitions: What to read.
            starts: Where to begin per partition (default: its first record).
            stops: Per partition, the offset not to read (default: read to the end).
            reached: Filled with the offset after the last position read, per
                partition: ``stops`` for a later read of the same records.

        Raises:
            DeadLetterError: A partition stopped yielding before its end.
        """
        if not partitions:
            return
        first, ends = await self.bounds(partitions)
        position = {tp: max(first[tp], (starts or {}).get(tp, first[tp])) for tp in partitions}
        stops = dict(stops or {})
        remaining = self._start(position, stops)
        idle = 0.0
        while remaining:
            batches = await self._poll(remaining)
            if batches is None:
                continue  # repositioned after records were deleted under us
            for tp, records in batches.items():
                stop = stops.get(tp)
                for record in records:
                    if stop is not None and record.offset >= stop:
                        break
                    yield record
            idle = 0.0 if batches else idle + _POLL_MS / 1000
            for tp in list(remaining):
                position[tp] = await self._consumer.position(tp)
                if _finished(position[tp], stops.get(tp), ends[tp], quiet=not batches):
                    remaining.discard(tp)
            if reached is not None:
                reached.update(position)
            if remaining and idle > _IDLE_LIMIT:
                names = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(remaining))
                raise DeadLetterError(f"reading {names} stalled before its end")
        if reached is not None:
            reached.update(position)

    def _start(self, position: Offsets, stops: Offsets) -> set[TopicPartition]:
        """Assign and seek the partitions that have something to read; return them."""
        remaining = {tp for tp, at in position.items() if at < stops.get(tp, at + 1)}
        if remaining:  # never assign([]): aiokafka's stop() then hangs in its fetcher
            self._consumer.assign(list(remaining))
            for tp in remaining:
                self._consumer.seek(tp, position[tp])
        return remaining

    async def _poll(self, remaining: set[TopicPartition]) -> dict[TopicPartition, list[Any]] | None:
        try:
            batches: dict[TopicPartition, list[Any]] = await self._consumer.getmany(
                *remaining, timeout_ms=_POLL_MS
            )
        except OffsetOutOfRangeError as exc:
            await self._recover(exc, remaining)
            return None
        return batches

    async def _recover(self, error: OffsetOutOfRangeError, remaining: set[TopicPartition]) -> None:
        """Skip to the first record if ours were deleted; stop if we are past the end."""
        out_of_range: dict[TopicPartition, int] = error.args[0] if error.args else {}
        for tp, offset in out_of_range.items():
            first, _ = await self.bounds([tp])
            if offset < first[tp]:
                self._consumer.seek(tp, first[tp])
            else:
                remaining.discard(tp)


def _finished(position: int, stop: int | None, end: int, *, quiet: bool) -> bool:
    """Whether a partition is read: at its stop, or past the reported end and quiet."""
    if stop is not None and position >= stop:
        return True
    return quiet and position >= end


@contextlib.asynccontextmanager
async def open_reader(config: Config) -> AsyncIterator[TopicReader]:
    """A :class:`TopicReader` on the configured brokers, connected within the bound.

    Raises:
        ServiceUnavailableError: Kafka stayed unreachable.
    """

    async def start() -> Any:
        consumer = AIOKafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="none",
            # Each reassignment waits for the fetch in flight: keep the long polls short.
            fetch_max_wait_ms=100,
            client_id=f"{config.client_id}-deadletters",
            **common_kwargs(config),
        )
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        return consumer

    consumer = await start_within_bound(config, "Kafka", start)
    # Let the consumer's background task begin: aiokafka's stop() raises
    # CancelledError when that task is cancelled before it ever ran.
    await asyncio.sleep(0)
    try:
        yield TopicReader(consumer)
    finally:
        await consumer.stop()
