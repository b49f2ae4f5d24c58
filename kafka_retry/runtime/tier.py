"""A Kafka tier: one aiokafka consumer, its poll loop, pausing, commits, rebalances."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Protocol

import attrs
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from kafka_retry import _kafka
from kafka_retry._clock import Cancellable, Clock
from kafka_retry._observe import NullObserver, Observer
from kafka_retry._transaction import TierTransaction
from kafka_retry.config import Config
from kafka_retry.message import H_DUE_AT
from kafka_retry.runtime._feed import record_bytes
from kafka_retry.runtime._txcommit import commit_in_transaction as _commit_in_transaction
from kafka_retry.runtime.batching import BatchPartitionWorker
from kafka_retry.runtime.concurrent import ConcurrentPartitionWorker
from kafka_retry.runtime.dispatch import Dispatcher
from kafka_retry.runtime.partition import PartitionWorker

log = logging.getLogger("kafka_retry")

_POLL_MS = 200
#: Seconds an offset commit may take; one that takes longer fails (and is tried again).
_COMMIT_BOUND = 5.0
_BACKPRESSURE = "backpressure"
_BYTES = "bytes"
_DUE = "due"
# A forged due time is clamped to this many milliseconds past "now + delay".
_MAX_DUE_MS = 253_402_300_799_000


def due_at(record: ConsumerRecord, delay_ms: int, now_ms: int) -> int:
    """When a retry record may be handled, in epoch milliseconds.

    The ``kafka-retry-due-at`` header wins; without it (records produced by
    others) the record timestamp plus the tier delay. Either way never later
    than ``now + delay``, so a forged header cannot park a partition for years.
    """
    due: int | None = None
    for name, value in record.headers or ():
        if name == H_DUE_AT and value is not None and len(value) <= 20:
            try:
                due = int(value)
            except ValueError:
                due = None
    if due is None or not 0 <= due <= _MAX_DUE_MS:
        due = record.timestamp + delay_ms
    return min(due, now_ms + delay_ms)


Worker = PartitionWorker | ConcurrentPartitionWorker


@attrs.define
class _Held:
    """What a tier keeps for one partition it holds: created on assign, dropped on revoke.

    Attributes:
        worker: Handles the partition's records.
        paused: Why the partition is paused (back-pressure, a due time); empty: fetching.
        timer: Resumes the partition at the due time it waits for.
        parked: ``(offset, due ms)`` of the record the partition waits for.
        committed: The offset last committed.
        first: The first offset fetched since the assignment: the lag base while
            nothing is done yet.
    """

    worker: Worker
    #: Bytes of each batch handed to the worker and not yet taken, oldest first.
    sizes: deque[int] = attrs.field(factory=deque)
    paused: set[str] = attrs.field(factory=set)
    timer: Cancellable | None = None
    parked: tuple[int, int] | None = None
    committed: int | None = None
    first: int | None = None


class Tier(Protocol):
    """One stage of the pipeline, run as one task by the consumer's task group."""

    name: str
    ready: asyncio.Event

    def request_stop(self) -> None:
        """Ask :meth:`run` to finish: drain, commit, close."""

    async def run(self) -> None:
        """Work until stopped; set ``ready`` once it holds its share of the work."""


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, tier: KafkaTier) -> None:
        self._tier = tier

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._tier.revoke(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._tier.assign(set(assigned))


class KafkaTier:
    """Consumes one tier's topics and feeds a :class:`PartitionWorker` per partition.

    Args:
        name: ``"main"`` or ``"retryN"``.
        config: The consumer's settings.
        consumer: An aiokafka consumer, not started, not subscribed.
        topics: The topics this tier reads.
        dispatcher: Runs handlers for this tier.
        delay: The tier's retry interval in seconds (None on the main tier).
        clock: Time source.
        observer: Receives rebalances and commit failures.
        transaction: With ``exactly_once``, the transaction the tier's hand-offs
            join: commits end it with the tier's offsets.
    """

    def __init__(
        self,
        name: str,
        config: Config,
        consumer: AIOKafkaConsumer,
        topics: list[str],
        dispatcher: Dispatcher,
        delay: float | None,
        clock: Clock,
        observer: Observer | None = None,
        *,
        transaction: TierTransaction | None = None,
    ) -> None:
        self.name = name
        self._transaction = transaction
        self._observer: Observer = observer or NullObserver()
        #: Clock time of the last completed poll (None before the first).
        self.last_poll: float | None = None
        self._config = config
        self._consumer = consumer
        self._topics = topics
        self._dispatcher = dispatcher
        self._delay_ms = None if delay is None else round(delay * 1000)
        self._clock = clock
        self._held: dict[TopicPartition, _Held] = {}
        self._high_water = max(1, config.max_in_flight)
        #: Bytes (keys and values) handed to workers and not yet taken by them.
        self._buffered_bytes = 0
        self._bytes_paused: set[TopicPartition] = set()
        self._permits = asyncio.Semaphore(config.max_in_flight)
        self._stopping = False
        self._polling: asyncio.Future[Any] | None = None
        self._crash: BaseException | None = None
        #: Assignments received so far (1 after the first join; more means rebalances).
        self.rebalances = 0
        self.ready = asyncio.Event()

    @property
    def assignment(self) -> frozenset[TopicPartition]:
        """The partitions this tier holds now."""
        return frozenset(self._held)

    @property
    def in_flight(self) -> int:
        """Handler calls running now."""
        return self._dispatcher.running

    def lag(self) -> dict[TopicPartition, int]:
        """Records not yet done per held partition: high-water mark minus done position.

        The high-water mark comes with fetch responses, so a paused partition's
        lag is as of its last fetch; a partition not fetched yet is left out.
        """
        held = self._consumer.assignment()
        lags: dict[TopicPartition, int] = {}
        for tp, state in self._held.items():
            if tp not in held:
                continue  # being revoked
            high = self._consumer.highwater(tp)
            if high is None:
                continue
            done = state.worker.position()
            if done is None:
                done = high if state.first is None else state.first
            lags[tp] = max(0, high - done)
        return lags

    def request_stop(self) -> None:
        """Ask the poll loop to end; :meth:`run` then drains, commits and closes."""
        self._stopping = True
        if self._polling is not None:
            # aiokafka's getmany() waits out a rebalance, whatever its timeout:
            # a stop must not wait for another member's drain.
            self._polling.cancel()

    async def run(self) -> None:
        """Poll until stopped; then drain workers, commit, leave the group.

        Raises:
            BaseException: Whatever ended a partition worker (never swallowed).
        """
        consumer = self._consumer
        consumer.subscribe(self._topics, listener=_Listener(self))
        try:
            await self._poll_loop()
        finally:
            try:
                await self._shutdown()
            finally:
                await _kafka.close_within_bound(f"tier {self.name}", consumer.stop)
        if self._crash is not None:
            # It ended the final drain (a hand-off that failed for good, a
            # handler interrupt): the consumer ends with it, after the commit of
            # what was done.
            raise self._crash

    async def _poll_loop(self) -> None:
        consumer = self._consumer
        next_commit = self._clock.time() + self._config.commit_interval
        while not self._stopping:
            batches = await self._poll(consumer)
            if batches is None:
                break
            self.last_poll = self._clock.time()
            if self._crash is not None:
                raise self._crash
            for tp, records in batches.items():
                self._feed(tp, records)
            now = self._clock.time()
            if now >= next_commit:
                await self.commit()
                next_commit = now + self._config.commit_interval

    async def _poll(self, consumer: AIOKafkaConsumer) -> dict[Any, Any] | None:
        """One ``getmany()``; None when :meth:`request_stop` interrupted it."""
        poll = self._polling = asyncio.ensure_future(consumer.getmany(timeout_ms=_POLL_MS))
        try:
            return await poll  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if poll.cancelled() and self._stopping and (task is None or not task.cancelling()):
                return None  # nothing was taken from an interrupted poll
            raise
        finally:
            self._polling = None

    def _feed(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        state = self._held.get(tp)
        if state is None:
            return  # revoked meanwhile: the next owner resumes from the committed offset
        if records and state.first is None:
            state.first = records[0].offset
        if _DUE in state.paused:
            return  # fetched before the seek back; the fetch position is already before them
        if self._delay_ms is not None:
            records = self._hold_back(tp, state, records)
        if not records:
            return
        worker = state.worker
        worker.submit(records)
        # One fetch can bring more records than the high-water mark (1 MB of small
        # records): pausing on the first would stall every partition for a fetch
        # round-trip, so a partition pauses only with a second batch waiting too.
        if worker.buffered >= self._high_water and worker.waiting_batches > 1:
            self._pause(tp, state, _BACKPRESSURE)
        size = record_bytes(records)
        state.sizes.append(size)
        self._buffered_bytes += size
        if self._buffered_bytes > self._config.max_buffered_bytes:
            # Counting records bounds small ones only: 100 KB records would
            # fill gigabytes before the first pause.
            self._pause(tp, state, _BYTES)
            self._bytes_paused.add(tp)

    def _hold_back(
        self, tp: TopicPartition, state: _Held, records: list[ConsumerRecord]
    ) -> list[ConsumerRecord]:
        """Keep the due prefix; park the partition at the first record not yet due."""
        assert self._delay_ms is not None
        now_ms = int(self._clock.time() * 1000)
        for index, record in enumerate(records):
            due = due_at(record, self._delay_ms, now_ms)
            parked = state.parked
            if parked is not None and parked[0] == record.offset:
                # Keep the bound of the first sight: a forged far-future due time
                # would otherwise move one delay further at every fetch.
                due = min(due, parked[1])
            if due > now_ms:
                state.parked = (record.offset, due)
                self._consumer.seek(tp, record.offset)
                self._pause(tp, state, _DUE)
                wait = (due - now_ms) / 1000
                state.timer = self._clock.call_later(wait, lambda: self._unpause(tp, _DUE))
                return records[:index]
        return records

    def _pause(self, tp: TopicPartition, state: _Held, reason: str) -> None:
        if not state.paused:
            self._consumer.pause(tp)
        state.paused.add(reason)

    def _unpause(self, tp: TopicPartition, reason: str) -> None:
        state = self._held.get(tp)
        if state is None or reason not in state.paused:
            return  # revoked meanwhile, or not paused for that reason
        state.paused.discard(reason)
        if reason == _DUE:
            state.timer = None
        if not state.paused:
            self._consumer.resume(tp)

    def _drained(self, tp: TopicPartition) -> None:
        """A worker took every record of its oldest batch."""
        state = self._held.get(tp)
        if state is None:
            return
        if state.sizes:
            self._buffered_bytes -= state.sizes.popleft()
        if state.worker.buffered <= self._high_water // 2:
            self._unpause(tp, _BACKPRESSURE)
        if self._bytes_paused and self._buffered_bytes <= self._config.max_buffered_bytes // 2:
            for other in self._bytes_paused:
                self._unpause(other, _BYTES)
            self._bytes_paused.clear()

    def _forget(self, tp: TopicPartition) -> None:
        """Drop a partition's state (revoked); its buffered bytes go with it."""
        state = self._held.pop(tp)
        self._bytes_paused.discard(tp)
        self._buffered_bytes -= sum(state.sizes)
        if state.timer is not None:
            state.timer.cancel()

    def _worker_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled():
            self._note_crash(task.exception())

    def _note_crash(self, error: BaseException | None) -> None:
        """Keep the first error that ends this tier; the poll loop or shutdown raises it."""
        if error is not None and self._crash is None:
            self._crash = error

    def _new_worker(self, tp: TopicPartition) -> Worker:
        ordering = self._config.ordering
        if ordering == "partition":
            return self._partition_worker(tp)
        by_key = ordering == "key"
        return ConcurrentPartitionWorker(
            tp,
            self._dispatcher,
            self._permits,
            by_key,
            self._drained,
            run_ahead=self._config.max_run_ahead,
        )

    def _partition_worker(self, tp: TopicPartition) -> PartitionWorker:
        """The in-order worker of ``tp``: in batches if its main topic has a batch handler."""
        dispatcher = self._dispatcher
        pending = self._config.max_in_flight
        spec = dispatcher.batch_handler(dispatcher.main_topic_of(tp.topic))
        if spec is None:
            return PartitionWorker(tp, dispatcher, pending, self._drained)
        return BatchPartitionWorker(tp, dispatcher, pending, self._drained, self._clock, spec)

    def assign(self, assigned: set[TopicPartition]) -> None:
        """Rebalance: start a worker for each newly assigned partition.

        While the tier stops, no worker is started: shutdown would never stop
        it; the partitions' records go to whoever holds them after this member
        has left the group.
        """
        if self._stopping:
            log.info(
                "tier %s stopping: not taking %s",
                self.name,
                sorted(str(tp) for tp in assigned),
                extra={"tier": self.name},
            )
            return
        for tp in assigned:
            if tp not in self._held:
                self._dispatcher.assigned(tp.topic, tp.partition)
                worker = self._new_worker(tp)
                self._held[tp] = _Held(worker)
                worker.start().add_done_callback(self._worker_ended)
        self.rebalances += 1
        self._observer.rebalanced(self.name)
        log.info(
            "tier %s assigned %s",
            self.name,
            sorted(str(tp) for tp in assigned),
            extra={"tier": self.name},
        )
        self.ready.set()

    async def revoke(self, revoked: set[TopicPartition]) -> None:
        """Rebalance: drain the revoked partitions' work (bounded), commit, forget them."""
        gone = [tp for tp in revoked if tp in self._held]
        if not gone:
            return
        log.info(
            "tier %s revoked %s: draining (up to %gs)",
            self.name,
            sorted(str(tp) for tp in gone),
            self._config.drain_timeout,
            extra={"tier": self.name},
        )
        try:
            drain = self._config.drain_timeout
            await asyncio.gather(*(self._held[tp].worker.stop(drain) for tp in gone))
            for tp in gone:
                self._note_crash(self._held[tp].worker.crashed())
            await self.commit(gone)
        except Exception as exc:
            # aiokafka logs a listener's error and carries on: the poll loop raises it.
            self._note_crash(exc)
        finally:
            for tp in gone:
                self._forget(tp)

    async def commit(self, partitions: list[TopicPartition] | None = None) -> None:
        """Commit the done position of each partition that moved since the last commit.

        With ``exactly_once`` the offsets of every held partition are committed
        in the tier's transaction, with its hand-offs (``runtime/_txcommit.py``).

        Raises:
            KafkaRetryError: With ``exactly_once``, the transaction could not end.
        """
        if self._transaction is not None:
            final = partitions is not None or self._stopping
            await _commit_in_transaction(self, self._transaction, final=final)
            return
        offsets = self.moved(partitions)
        if not offsets:
            return
        try:
            # aiokafka looks the coordinator up for as long as Kafka is away: a
            # commit that cannot finish soon is given up, and tried again later.
            async with asyncio.timeout(_COMMIT_BOUND):
                await self._consumer.commit(offsets)
        except (KafkaError, TimeoutError) as exc:
            self._observer.commit_failed(self.name)
            log.warning(
                "tier %s: commit failed: %s",
                self.name,
                str(exc) or f"no answer within {_COMMIT_BOUND:g}s",
                extra={"tier": self.name, "error_type": type(exc).__name__},
            )
            return
        self.committed(offsets)

    def moved(self, partitions: list[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """The done position of each partition (of ``partitions``) not committed yet."""
        offsets: dict[TopicPartition, int] = {}
        for tp in partitions if partitions is not None else list(self._held):
            state = self._held.get(tp)
            position = state.worker.position() if state is not None else None
            if state is not None and position is not None and position != state.committed:
                offsets[tp] = position
        return offsets

    def positions(self) -> dict[TopicPartition, int | None]:
        """The done position of every held partition (None: nothing done yet)."""
        return {tp: state.worker.position() for tp, state in self._held.items()}

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        """Note ``offsets`` as committed."""
        for tp, position in offsets.items():
            state = self._held.get(tp)
            if state is not None:
                state.committed = position

    async def _shutdown(self) -> None:
        self._stopping = True
        for state in self._held.values():
            if state.timer is not None:
                state.timer.cancel()
                state.timer = None
        drain = self._config.drain_timeout
        held = list(self._held.values())
        await asyncio.gather(*(state.worker.stop(drain) for state in held))
        for state in held:
            self._note_crash(state.worker.crashed())
        await self.commit()
        self._held.clear()
        self._buffered_bytes = 0
