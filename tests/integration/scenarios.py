"""Scenarios written once and run in memory and against a real broker.

A scenario is an ``async def (harness) -> None`` that sets topics up through a
:class:`Harness`, runs a consumer, waits, and asserts what a user can observe:
the handler calls (attempts, topics, keys, values, headers, provenance) and
the dead letters (key, value, original headers, error, attempts). The same
assertions hold in both modes and with both retry backends; that is the point.
With the postgres backend a harness sets ``retry_backend="postgres"`` in
:meth:`Harness.config` and reads retries and dead letters from the table (in
memory: :class:`~kafka_retry.testing.MemoryRetryTable`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, Protocol

import asyncpg

from kafka_retry import Config, Consumer, DatabaseConfig, Message, NonRetryableError
from kafka_retry.runtime.dispatch import Handler
from kafka_retry.testing import DeadLetter, MemoryBroker, TestConsumer, VirtualClock

from .support import config_for, create_topics, eventually, fresh, produce, read_all

Header = tuple[str, bytes | None]
Record = tuple[bytes | None, bytes | None, Sequence[Header]]

ODD_VALUE = b"\xff\x00\xfe not utf-8 \x80"
DUP_HEADERS: list[Header] = [("trace", b"1"), ("trace", b"2"), ("bin", b"\x00\xff")]
Backend = Literal["kafka", "postgres"]
BACKENDS: list[Backend] = ["kafka", "postgres"]


class Harness(Protocol):
    """Where a scenario runs: topics, records, a running consumer, what came out."""

    name: str
    backend: Backend

    def config(self, **fields: Any) -> Config:
        """A Config for this harness's broker and retry backend, with a fresh group."""

    def now(self) -> float:
        """The consumer's clock, seconds since the epoch."""

    async def create_topics(self, *topics: str, partitions: int = 1) -> None:
        """Create main topics."""

    async def produce(self, topic: str, records: Sequence[Record]) -> None:
        """Produce ``(key, value, headers)`` records."""

    def running(
        self, config: Config, handlers: Mapping[str, Handler]
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """Run a consumer for the block."""

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        """Let the consumer work until ``condition`` holds (fail the test otherwise)."""

    async def dead_letters(self, config: Config, topic: str, count: int) -> list[DeadLetter]:
        """The dead letters of ``topic``; ``count`` is how many to expect."""

    async def retried(self, config: Config, topic: str) -> int:
        """How many records went to ``topic``'s first retry tier."""


def topic_of(h: Harness, config: Config, topic: str, attempt: int) -> str:
    """The topic a handler sees at ``attempt``: a retry topic, or the main one for table rows."""
    return config.topic_chain(topic)[attempt - 1] if h.backend == "kafka" else topic


def scheduled(rows: Sequence[Any], topic: str) -> int:
    """Rows of ``topic`` that went to a retry tier (all but first-attempt dead letters)."""
    return sum(
        1
        for row in rows
        if row["main_topic"] == topic
        and not (row["state"] == "dead_lettered" and row["attempts"] == 1)
    )


class Recorder:
    """A handler that records each call with its clock time, and fails as told."""

    def __init__(
        self, now: Callable[[], float], fail: Callable[[Message], Exception | None] | None = None
    ) -> None:
        self.calls: list[Message] = []
        self.started: list[float] = []
        self._now = now
        self._fail = fail

    async def __call__(self, message: Message) -> None:
        self.calls.append(message)
        self.started.append(self._now())
        error = self._fail(message) if self._fail is not None else None
        if error is not None:
            raise error


class MemoryHarness:
    """Scenarios on :class:`TestConsumer`: waiting is draining the virtual clock."""

    name = "memory"

    def __init__(self, backend: Backend = "kafka") -> None:
        self.backend = backend
        self.clock = VirtualClock()
        self.broker = MemoryBroker(clock=self.clock)
        self._running: TestConsumer | None = None
        self._last: TestConsumer | None = None

    def config(self, **fields: Any) -> Config:
        fields.setdefault("group", fresh("g"))
        if self.backend == "postgres":
            # The in-memory table uses only the schema and table names.
            fields.update(retry_backend="postgres", database=DatabaseConfig(schema="memory"))
        return Config(bootstrap_servers="in-memory:9092", **fields)

    def now(self) -> float:
        return self.clock.time()

    async def create_topics(self, *topics: str, partitions: int = 1) -> None:
        for topic in topics:
            self.broker.create_topic(topic, partitions)

    async def produce(self, topic: str, records: Sequence[Record]) -> None:
        for key, value, headers in records:
            self.broker.append(topic, value, key=key, headers=headers)

    @contextlib.asynccontextmanager
    async def running(self, config: Config, handlers: Mapping[str, Handler]) -> AsyncIterator[None]:
        async with TestConsumer(config, handlers, broker=self.broker) as consumer:
            self._running = self._last = consumer
            try:
                yield
            finally:
                self._running = None

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        assert self._running is not None, "wait_for needs a running consumer"
        await self._running.drain()
        assert condition(), "condition does not hold once all work is done"

    async def dead_letters(self, config: Config, topic: str, count: int) -> list[DeadLetter]:
        assert self._last is not None, "no consumer ran"
        return self._last.dead_letters(topic)

    async def retried(self, config: Config, topic: str) -> int:
        if self._last is not None and self._last.table is not None:
            return scheduled(self._last.table.rows(), topic)
        return len(self.broker.records(config.chain(topic).retries[0]))


class KafkaHarness:
    """Scenarios against a real broker: waiting is polling the condition."""

    name = "kafka"

    def __init__(self, kafka: Any, database_url: str | None = None, schema: str = "") -> None:
        self.backend: Backend = "kafka" if database_url is None else "postgres"
        self._kafka = kafka
        self._bootstrap: str = kafka.bootstrap_servers
        self._database_url = database_url
        self._schema = schema

    def config(self, **fields: Any) -> Config:
        if self._database_url is not None:
            database = DatabaseConfig.from_url(self._database_url, schema=self._schema)
            fields.update(retry_backend="postgres", database=database)
        return config_for(self._kafka, **fields)

    def now(self) -> float:
        return time.time()

    async def create_topics(self, *topics: str, partitions: int = 1) -> None:
        await create_topics(self._bootstrap, *topics, partitions=partitions)

    async def produce(self, topic: str, records: Sequence[Record]) -> None:
        await produce(self._bootstrap, topic, records)

    @contextlib.asynccontextmanager
    async def running(self, config: Config, handlers: Mapping[str, Handler]) -> AsyncIterator[None]:
        async with Consumer(config, handlers):
            yield

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        await eventually(condition)

    async def dead_letters(self, config: Config, topic: str, count: int) -> list[DeadLetter]:
        if config.database is not None:
            # A final failure is in the table before its offset is done: no waiting.
            where = f"{config.database.schema}.{config.database.table}"
            return [
                DeadLetter.from_row(row, where)
                for row in await self._rows(config)
                if row["state"] == "dead_lettered" and row["main_topic"] == topic
            ]
        # Expecting none: look briefly, since absence cannot be awaited.
        name, within = config.chain(topic).dead_letter, 30 if count else 1
        records = await read_all(self._bootstrap, name, count or 1, within)
        return [DeadLetter.from_record(r) for r in records]

    async def retried(self, config: Config, topic: str) -> int:
        if config.database is not None:
            return scheduled(await self._rows(config), topic)
        return len(await read_all(self._bootstrap, config.chain(topic).retries[0], 1, within=1))

    async def _rows(self, config: Config) -> list[asyncpg.Record]:
        database = config.database
        assert database is not None and self._database_url is not None
        conn = await asyncpg.connect(self._database_url)
        try:
            return await conn.fetch(
                f'SELECT * FROM "{database.schema}"."{database.table}"'
                " WHERE consumer_group = $1 ORDER BY id",
                config.group,
            )
        finally:
            await conn.close()


def _fail_first(message: Message) -> Exception | None:
    return ValueError("upstream down") if message.attempt == 1 else None


def _always(message: Message) -> Exception | None:
    return RuntimeError(f"boom {message.attempt}")


def _assert_original(message: Message | DeadLetter, key: bytes | None, value: bytes) -> None:
    assert (message.key, message.value, list(message.headers)) == (key, value, DUP_HEADERS)


async def success(h: Harness) -> None:
    """A message that succeeds is handled once, byte-exact, and never dead-lettered."""
    topic = fresh("product")
    await h.create_topics(topic)
    await h.produce(topic, [(b"k", ODD_VALUE, DUP_HEADERS)])
    config = h.config(topics=[topic], retry_intervals=[1])
    handler = Recorder(h.now)
    async with h.running(config, {topic: handler}):
        await h.wait_for(lambda: len(handler.calls) == 1)
    [message] = handler.calls
    _assert_original(message, b"k", ODD_VALUE)
    assert (message.topic, message.main_topic, message.attempt) == (topic, topic, 1)
    assert message.provenance is None
    assert await h.dead_letters(config, topic, 0) == []


async def retry_then_success(h: Harness) -> None:
    """A first failure is retried once from retry1, not before its due time, byte-exact."""
    topic = fresh("product")
    await h.create_topics(topic)
    await h.produce(topic, [(b"k", ODD_VALUE, DUP_HEADERS)])
    config = h.config(topics=[topic], retry_intervals=[1])
    handler = Recorder(h.now, _fail_first)
    async with h.running(config, {topic: handler}):
        await h.wait_for(lambda: len(handler.calls) == 2)
    first, retry = handler.calls
    assert (retry.attempt, retry.main_topic) == (2, topic)
    assert retry.topic == topic_of(h, config, topic, 2)
    _assert_original(retry, b"k", ODD_VALUE)
    assert retry.timestamp == first.timestamp
    provenance = retry.provenance
    assert provenance is not None
    assert (provenance.attempts, provenance.original_topic) == (1, topic)
    assert (provenance.original_partition, provenance.original_offset) == (0, first.offset)
    assert (provenance.error_type, provenance.error_message) == ("ValueError", "upstream down")
    assert provenance.due_at == provenance.failed_at + 1000
    assert int(handler.started[1] * 1000) >= provenance.due_at
    assert await h.dead_letters(config, topic, 0) == []


async def exhausted_to_dead_letter(h: Harness) -> None:
    """Intervals [1, 2], always failing: three attempts through the chain, one dead letter."""
    topic = fresh("product")
    await h.create_topics(topic, partitions=2)
    await h.produce(topic, [(b"key-1", ODD_VALUE, DUP_HEADERS)])
    config = h.config(topics=[topic], retry_intervals=[1, 2])
    handler = Recorder(h.now, _always)
    async with h.running(config, {topic: handler}):
        await h.wait_for(lambda: len(handler.calls) == 3)
        dead = await h.dead_letters(config, topic, 1)
    assert [m.attempt for m in handler.calls] == [1, 2, 3]
    assert [m.topic for m in handler.calls] == [topic_of(h, config, topic, a) for a in (1, 2, 3)]
    for retry, interval in zip(handler.calls[1:], (1000, 2000), strict=True):
        assert retry.provenance is not None
        assert retry.provenance.due_at == retry.provenance.failed_at + interval
    [letter] = dead
    _assert_original(letter, b"key-1", ODD_VALUE)
    assert letter.timestamp == handler.calls[0].timestamp
    assert (letter.attempts, letter.error_type) == (3, "RuntimeError")
    assert letter.error_message == "boom 3"
    assert letter.main_topic == topic
    assert letter.provenance is not None
    assert letter.provenance.original_offset == handler.calls[0].offset


async def non_retryable(h: Harness) -> None:
    """NonRetryableError and configured types go to the dead letter at once, never to retry1."""
    topic = fresh("product")
    await h.create_topics(topic)
    await h.produce(topic, [(b"a", b"1", DUP_HEADERS), (b"b", b"2", DUP_HEADERS)])
    config = h.config(topics=[topic], retry_intervals=[1], non_retryable=[KeyError])

    def refuse(message: Message) -> Exception:
        return NonRetryableError("bad payload") if message.key == b"a" else KeyError("missing")

    handler = Recorder(h.now, refuse)
    async with h.running(config, {topic: handler}):
        await h.wait_for(lambda: len(handler.calls) == 2)
        dead = await h.dead_letters(config, topic, 2)
    assert [(m.key, m.attempt) for m in handler.calls] == [(b"a", 1), (b"b", 1)]
    observed = sorted((d.key, d.attempts, d.error_type, d.error_message) for d in dead)
    assert observed == [
        (b"a", 1, "kafka_retry.NonRetryableError", "bad payload"),
        (b"b", 1, "KeyError", "'missing'"),
    ]
    assert all(list(d.headers) == DUP_HEADERS for d in dead)
    assert await h.retried(config, topic) == 0


async def two_topics(h: Harness) -> None:
    """Each main topic's failures go through its own chain, back to its own handler."""
    product, price = fresh("product"), fresh("price")
    await h.create_topics(product, price)
    await h.produce(product, [(b"p", b"product", [])])
    await h.produce(price, [(b"q", b"price", [])])
    config = h.config(topics=[product, price], retry_intervals=[1])
    on_product, on_price = Recorder(h.now, _fail_first), Recorder(h.now, _fail_first)
    async with h.running(config, {product: on_product, price: on_price}):
        await h.wait_for(lambda: len(on_product.calls) == 2 and len(on_price.calls) == 2)
    for handler, topic, value in ((on_product, product, b"product"), (on_price, price, b"price")):
        assert [m.topic for m in handler.calls] == [topic_of(h, config, topic, a) for a in (1, 2)]
        assert [m.main_topic for m in handler.calls] == [topic, topic]
        assert [m.value for m in handler.calls] == [value, value]


async def ordered_keys(h: Harness) -> None:
    """Ordered retries (postgres only): a key's later messages wait behind its retry, in order."""
    topic = fresh("product")
    await h.create_topics(topic)
    records = [(b"k1", b"a"), (b"k1", b"b"), (b"k2", b"x"), (b"k1", b"c"), (b"k2", b"y")]
    await h.produce(topic, [(key, value, DUP_HEADERS) for key, value in records])
    config = h.config(topics=[topic], retry_intervals=[1], ordered_retries=True)

    def fail_a_first(message: Message) -> Exception | None:
        return _fail_first(message) if message.value == b"a" else None

    handler = Recorder(h.now, fail_a_first)
    async with h.running(config, {topic: handler}):
        await h.wait_for(lambda: len(handler.calls) == 6)
    calls = handler.calls
    k1 = [(m.value, m.attempt) for m in calls if m.key == b"k1"]
    assert k1 == [(b"a", 1), (b"a", 2), (b"b", 1), (b"c", 1)]
    assert [m.value for m in calls if m.key == b"k2"] == [b"x", b"y"]
    waited = [m for m in calls if m.value in (b"b", b"c")]
    assert all(m.provenance is None and m.topic == topic for m in waited)
    assert all(list(m.headers) == DUP_HEADERS for m in waited)  # byte-exact through the table
    assert await h.dead_letters(config, topic, 0) == []


Scenario = Callable[[Harness], Awaitable[None]]
SCENARIOS: list[Scenario] = [
    success,
    retry_then_success,
    exhausted_to_dead_letter,
    non_retryable,
    two_topics,
]
#: Scenarios of the postgres backend only.
POSTGRES_SCENARIOS: list[Scenario] = [ordered_keys]
