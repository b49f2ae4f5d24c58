""":class:`TestConsumer`: the real consumer runtime on an in-memory broker and a virtual clock."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Protocol

import attrs
from aiokafka import ConsumerRecord
from aiokafka.structs import RecordMetadata

from kafka_retry._batch import batch_handlers as batch_handlers_of
from kafka_retry._typed import AnyHandler, adapt_handlers
from kafka_retry.config import Config
from kafka_retry.errors import BatchFailed, ConsumerStateError
from kafka_retry.message import Header, Message
from kafka_retry.retry.table import DEAD_LETTERED
from kafka_retry.runtime.consumer import Consumer
from kafka_retry.runtime.dispatch import Handler
from kafka_retry.testing._broker import MemoryBroker
from kafka_retry.testing._clients import MemoryTransport
from kafka_retry.testing._clock import TIMER_TOLERANCE, VirtualClock
from kafka_retry.testing._records import Call, DeadLetter, NotSettledError
from kafka_retry.testing._table import MemoryRetryTable

__all__ = ["MakeTestConsumer", "TestConsumer"]

# Loop turns in a row with nothing changing before the consumer counts as settled:
# each step of a record (fetch, worker, handler, hand-off) shows within a few turns.
_QUIET_TURNS = 20
# Pause between looks once nothing changes but work is pending (a handler awaiting I/O).
_IDLE_POLL = 0.002
# Real seconds a stop may drain after the block raised, before in-flight work is cancelled.
_FAILED_BLOCK_GRACE = 0.5


class TestConsumer:
    """Runs a consumer's handlers on the real runtime, against an in-memory broker.

    The consumer is rebuilt from the same config and handlers with a
    :class:`MemoryTransport` and a :class:`VirtualClock`: tiers, routing,
    provenance and commits are the production code; only Kafka and time are
    replaced. With ``retry_backend="postgres"``, the backend's own store and
    pollers run on a :class:`MemoryRetryTable` (:attr:`table`) instead of
    PostgreSQL; the database settings are not used. The main topics are created
    on construction (with the whole chain when ``config.create_topics`` is off
    and the backend is Kafka), so records can be published before the consumer
    starts.

    Args:
        consumer: The application's :class:`~kafka_retry.Consumer` (only its
            config and handlers are used; it is not started), or a Config.
        handlers: Handlers per main topic; they replace the consumer's for those topics.
        batch_handlers: Batch handlers per main topic (functions, with the default
            limits); they replace the consumer's for those topics.
        broker: The broker; by default a new one on ``clock``.
        clock: The virtual clock; by default the broker's, or a new one.
        partitions: Partitions of each main topic created here.

    Raises:
        ValueError: The broker's clock is not ``clock``.
    """

    __test__ = False  # not a test class, despite the name

    def __init__(
        self,
        consumer: Consumer | Config,
        handlers: Mapping[str, AnyHandler] | None = None,
        *,
        batch_handlers: Mapping[str, AnyHandler] | None = None,
        broker: MemoryBroker | None = None,
        clock: VirtualClock | None = None,
        partitions: int = 1,
    ) -> None:
        # Typed handlers are adapted before they are recorded, so the record is
        # of the Message the runtime hands over; the consumer's are adapted already.
        if isinstance(consumer, Consumer):
            config = consumer.config
            given = {**consumer.handlers, **adapt_handlers(handlers or {}, config.decoder)}
            batches = {**consumer.batch_handlers, **batch_handlers_of(batch_handlers or {})}
        else:
            config, given = consumer, adapt_handlers(handlers or {}, consumer.decoder)
            batches = batch_handlers_of(batch_handlers or {})
        # A topic given a handler here drops the consumer's batch handler, and back.
        given = {topic: h for topic, h in given.items() if topic not in (batch_handlers or {})}
        batches = {topic: b for topic, b in batches.items() if topic not in (handlers or {})}
        if clock is None:
            clock = broker.clock if broker and isinstance(broker.clock, VirtualClock) else None
        self.clock: VirtualClock = clock or VirtualClock()
        self.broker: MemoryBroker = broker or MemoryBroker(clock=self.clock)
        if self.broker.clock is not self.clock:
            raise ValueError("the broker must run on the same clock: MemoryBroker(clock=clock)")
        self.config = config
        self.transport = MemoryTransport(self.broker)
        #: The postgres backend's table, in memory; None with the Kafka backend.
        self.table: MemoryRetryTable | None = None
        if config.retry_backend == "postgres":
            assert config.database is not None  # Config refuses postgres without it
            where = f"{config.database.schema}.{config.database.table}"
            self.table = MemoryRetryTable(
                self.clock, where, cascade_dead_letters=config.ordered_dead_letter == "dead_letter"
            )
        #: Every message a handler got, in the order the calls started.
        self.calls: list[Message] = []
        #: Every finished handler call, in the order they finished (one per message of a batch).
        self.history: list[Call] = []
        #: Every batch a batch handler got, in the order the calls started.
        self.batches: list[list[Message]] = []
        self._running: dict[int, Message] = {}
        self._call_ids = itertools.count()
        recorded = {topic: self._recorded(handler) for topic, handler in given.items()}
        recorded_batches = {
            topic: attrs.evolve(spec, function=self._recorded_batch(spec.function))
            for topic, spec in batches.items()
        }
        #: The consumer that runs: ``config`` and the recorded handlers, in memory.
        self.consumer = Consumer(
            config,
            recorded,
            batch_handlers=recorded_batches,
            clock=self.clock,
            transport=self.transport,
            retry_table=self.table,
        )
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._create_topics(partitions)

    def __repr__(self) -> str:
        return f"<TestConsumer group={self.config.group!r} calls={len(self.calls)}>"

    def _create_topics(self, partitions: int) -> None:
        for topic in self.config.topics:
            self.broker.ensure_topic(topic, partitions)
            if not self.config.create_topics and self.table is None:
                count = self.broker.partitions(topic)
                for name in self.config.topic_chain(topic)[1:]:
                    self.broker.ensure_topic(name, count)

    def _recorded(self, handler: Handler) -> Handler:
        call = getattr(handler, "__call__", None)  # noqa: B004 - async callables count too
        if not (inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)):
            return handler  # the runtime refuses it with a clear SetupError

        async def recorded(message: Message) -> None:
            call_id = next(self._call_ids)
            started = self.clock.time()
            self.calls.append(message)
            self._running[call_id] = message
            error: BaseException | None = None
            try:
                await handler(message)
            except BaseException as exc:
                error = exc
                raise
            finally:
                del self._running[call_id]
                self.history.append(Call(message, started, self.clock.time(), error))

        return recorded

    def _recorded_batch(self, function: Callable[[list[Message]], Awaitable[Any]]) -> Any:
        async def recorded(messages: list[Message]) -> None:
            ids = [next(self._call_ids) for _ in messages]
            started = self.clock.time()
            self.batches.append(list(messages))
            self.calls.extend(messages)
            self._running.update(zip(ids, messages, strict=True))
            error: BaseException | None = None
            try:
                await function(messages)
            except BaseException as exc:
                error = exc
                raise
            finally:
                for call_id in ids:
                    del self._running[call_id]
                finished = self.clock.time()
                for message in messages:
                    failed = error
                    if isinstance(error, BatchFailed):
                        failed = error.failures.get(message)
                    self.history.append(Call(message, started, finished, failed))

        return recorded

    # Lifecycle

    async def __aenter__(self) -> TestConsumer:
        if self._task is not None or self._closed:
            raise ConsumerStateError("a TestConsumer runs once")
        self._task = asyncio.create_task(self.consumer.run(), name="kafka-retry:test-consumer")
        try:
            await self.consumer.wait_ready()
        except BaseException:
            await self._finish(raise_error=False)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The block failed (a NotSettledError, say): a stuck handler need not hold
        # the test for the whole drain timeout.
        grace = None if exc is None else _FAILED_BLOCK_GRACE
        await self._finish(raise_error=exc is None, grace=grace)

    async def aclose(self) -> None:
        """Stop the consumer (drain, commit, close); idempotent.

        Raises:
            BaseException: Whatever ended the consumer with an error.
        """
        await self._finish(raise_error=True)

    async def _finish(self, *, raise_error: bool, grace: float | None = None) -> None:
        task = self._task
        if self._closed or task is None:
            self._closed = True
            return
        self._closed = True
        self.consumer.request_stop()
        loop = asyncio.get_running_loop()
        give_up = None if grace is None else loop.time() + grace
        try:
            while not task.done():
                if give_up is not None and loop.time() >= give_up:
                    task.cancel()
                # Tiers may be waiting in a fetch (200 ms); wake them until they see the stop.
                self.transport.interrupt()
                await asyncio.wait({task}, timeout=0.005)
        except asyncio.CancelledError:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise
        if task.cancelled() or task.exception() is None or not raise_error:
            return
        raise task.exception()  # type: ignore[misc]

    # Input and output

    async def publish(
        self,
        topic: str,
        value: bytes | None = None,
        *,
        key: bytes | None = None,
        headers: Iterable[Header] | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        """Produce one record, as another service would (to any topic of the broker).

        Returns:
            Where it landed (partition, offset, timestamp).

        Raises:
            UnknownTopicOrPartitionError: No such topic or partition.
            TypeError: Key, value or a header value is not bytes (or None).
        """
        return self.broker.append(
            topic, value, key=key, headers=headers, partition=partition, timestamp_ms=timestamp_ms
        )

    def dead_letters(self, topic: str) -> list[DeadLetter]:
        """The dead letters of main topic ``topic``, decoded.

        With the Kafka backend, the dead-letter topic's records, partition by
        partition; with the postgres backend, the dead-lettered rows of
        :attr:`table`, in insertion order (see :meth:`DeadLetter.from_row`).

        Raises:
            ValueError: ``topic`` is not one of the config's topics.
        """
        if topic not in self.config.topics:
            raise ValueError(
                f"{topic!r} is not a configured topic: {', '.join(self.config.topics)}"
            )
        if self.table is not None:
            return [
                DeadLetter.from_row(row, self.table.where)
                for row in self.table.rows(self.config.group)
                if row["state"] == DEAD_LETTERED and row["main_topic"] == topic
            ]
        name = self.config.chain(topic).dead_letter
        if not self.broker.has_topic(name):
            return []
        return [DeadLetter.from_record(record) for record in self.broker.records(name)]

    def records(self, topic: str) -> list[ConsumerRecord]:
        """The raw records of any topic (a retry topic, say), partition by partition."""
        return self.broker.records(topic)

    # Running until quiet

    async def settle(self, *, within: float = 30.0) -> None:
        """Run until no work is left at the current clock time; never moves the clock.

        Work is left while a handler runs, a record is not fetched yet, a
        hand-off is on its way, or a group is rebalancing. Retries that are not
        due yet are not work: they wait for the clock.

        Raises:
            NotSettledError: Still busy after ``within`` real seconds.
            BaseException: Whatever ended the consumer with an error.
        """
        await self._settle(asyncio.get_running_loop().time() + within)

    async def drain(self, *, within: float = 30.0, max_jumps: int = 1000) -> None:
        """Run until all work is done, jumping the clock to each next retry's due time.

        Raises:
            NotSettledError: Still busy after ``within`` real seconds, or timers
                still pending after ``max_jumps`` clock jumps.
            BaseException: Whatever ended the consumer with an error.
        """
        await self._run_clock(None, within, max_jumps)

    async def advance(self, seconds: float, *, within: float = 30.0, max_jumps: int = 1000) -> None:
        """Let ``seconds`` of clock time pass, everything due in between happening on time.

        The clock stops at each timer in the window (a retry falling due), lets
        the consumer settle, and moves on; a retry that fails again in the
        window is retried in it too if its next interval fits.

        Raises:
            ValueError: ``seconds`` is negative.
            NotSettledError: As for :meth:`drain`.
        """
        if seconds < 0:
            raise ValueError(f"cannot move the clock back ({seconds} s)")
        await self._run_clock(self.clock.time() + seconds, within, max_jumps)

    async def _run_clock(self, until: float | None, within: float, max_jumps: int) -> None:
        deadline = asyncio.get_running_loop().time() + within
        start = self.clock.time()
        for _ in range(max_jumps + 1):
            await self._settle(deadline)
            due = self.clock.next_due
            if due is None or (until is not None and due > until + TIMER_TOLERANCE):
                if until is not None and until > self.clock.time():
                    self.clock.advance(until - self.clock.time())
                    await self._settle(deadline)
                return
            self.clock.advance_to_next_timer()
        moved = self.clock.time() - start
        raise NotSettledError(
            f"timers still pending after {max_jumps} clock jumps ({moved:.1f} s of clock time)",
            self._pending(timers=True),
        )

    async def _settle(self, deadline: float) -> None:
        if self._task is None:
            raise ConsumerStateError("start the TestConsumer first: async with TestConsumer(...)")
        loop = asyncio.get_running_loop()
        last: tuple[int, ...] | None = None
        quiet = 0
        while True:
            self._raise_if_ended()
            table = 0 if self.table is None else self.table.version
            now = (
                self.broker.version,
                self.clock.version,
                table,
                len(self.calls),
                len(self.history),
            )
            quiet = quiet + 1 if now == last else 0
            last = now
            pending = self._pending()
            if not pending and quiet >= _QUIET_TURNS:
                return
            if loop.time() >= deadline:
                raise NotSettledError(
                    "the consumer did not settle in time", self._pending(timers=True)
                )
            await asyncio.sleep(0 if quiet < _QUIET_TURNS else _IDLE_POLL)

    def _raise_if_ended(self) -> None:
        task = self._task
        if task is None or not task.done():
            return
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

    def _pending(self, *, timers: bool = False) -> list[str]:
        """What keeps the consumer busy now (and, with ``timers``, what waits for the clock)."""
        pending = [
            f"handler running: {m.topic}[{m.partition}]@{m.offset} attempt {m.attempt}"
            for m in self._running.values()
        ]
        for consumer in self.transport.consumers:
            reason = consumer.pending_work()
            if reason is not None:
                pending.append(reason)
        if self.table is not None:
            reason = self.table.pending_work()
            if reason is not None:
                pending.append(reason)
        due = self.clock.next_due
        if timers and due is not None:
            pending.append(
                f"{self.clock.pending} timer(s), next in {due - self.clock.time():.3f} s"
            )
        return pending


class MakeTestConsumer(Protocol):
    """The type of the ``test_consumer`` pytest fixture."""

    def __call__(
        self,
        consumer: Consumer | Config,
        handlers: Mapping[str, AnyHandler] | None = None,
        *,
        batch_handlers: Mapping[str, AnyHandler] | None = None,
        partitions: int = 1,
    ) -> TestConsumer: ...
