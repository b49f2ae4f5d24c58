"""Batch handlers: batching rules, BatchFailed outcomes, offsets, metrics, registration errors."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry

from kafka_retry import (
    BatchFailed,
    Config,
    ConfigError,
    Consumer,
    DatabaseConfig,
    Message,
    NonRetryableError,
    SetupError,
)
from kafka_retry._batch import BatchHandler
from kafka_retry._clock import SystemClock
from kafka_retry.metrics import Metrics, PrometheusObserver
from kafka_retry.retry.base import Failure
from kafka_retry.retry.table import SUCCEEDED
from kafka_retry.runtime.batching import BatchPartitionWorker
from kafka_retry.runtime.dispatch import Dispatcher, batch_errors
from kafka_retry.testing import TestConsumer, VirtualClock


def make_config(backend: Literal["kafka", "postgres"] = "kafka", **fields: Any) -> Config:
    """One topic, one retry tier of 5 s; the postgres backend runs on the in-memory table."""
    fields.setdefault("retry_intervals", [5])
    if backend == "postgres":
        fields["database"] = DatabaseConfig()
    return Config(
        bootstrap_servers="localhost:9092",
        group="shop",
        topics=["events"],
        retry_backend=backend,
        metrics=False,
        **fields,
    )


class GatedBackend:
    """A retry backend whose hand-offs wait for ``gate``."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.arrived = asyncio.Event()
        self.acknowledged = asyncio.Event()

    async def schedule(self, failure: Failure) -> None:
        self.arrived.set()
        await self.gate.wait()
        self.acknowledged.set()

    async def dead_letter(self, failure: Failure) -> None:
        await self.schedule(failure)


def dispatcher_for(backend: Any, function: Any, observer: Any = None) -> Dispatcher:
    """A main-tier dispatcher of topic ``events`` with ``function`` as its batch handler."""
    return Dispatcher(
        config=make_config(),
        handlers={},
        batch_handlers={"events": BatchHandler(function, 10, 0.0)},
        main_of={"events": "events"},
        attempt=1,
        retry=backend,
        dead_letters=backend,
        clock=SystemClock(),
        observer=observer,
    )


def batch_worker(backend: Any, function: Any, max_size: int) -> BatchPartitionWorker:
    """A batch worker of events[0] that does not wait for more records."""
    spec = BatchHandler(function, max_size, 0.0)
    dispatcher = dispatcher_for(backend, function)
    tp = TopicPartition("events", 0)
    return BatchPartitionWorker(tp, dispatcher, 10, lambda tp: None, SystemClock(), spec)


def record(offset: int) -> ConsumerRecord:
    """A fetched record of events[0]."""
    return ConsumerRecord(
        topic="events",
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=None,
        value=b"v",
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=1,
        headers=(),
    )


def message(offset: int, partition: int = 0) -> Message:
    """A main-tier message of topic ``events``."""
    return Message("events", partition, offset, None, b"v", (), 0, "events")


def offsets(batch: list[Message]) -> list[int]:
    """The offsets of a batch, in its order."""
    return [m.offset for m in batch]


# Batching rules


async def test_a_batch_holds_at_most_max_size_records_in_offset_order() -> None:
    """Ten queued records with max_size=4 come as batches of 4, 4 and 2, in offset order."""
    consumer = Consumer(make_config())

    @consumer.batch_handler("events", max_size=4, max_wait=1.0)
    async def on_events(messages: list[Message]) -> None:
        pass

    t = TestConsumer(consumer)
    for n in range(10):
        await t.publish("events", b"%d" % n)
    async with t:
        await t.drain()
    assert [offsets(b) for b in t.batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert t.broker.committed("shop", "events") == 10


async def test_a_short_batch_waits_max_wait_on_the_clock_then_runs() -> None:
    """A partial batch is not handled until max_wait of clock time has passed since its first."""
    consumer = Consumer(make_config())

    @consumer.batch_handler("events", max_size=100, max_wait=2.0)
    async def on_events(messages: list[Message]) -> None:
        pass

    async with TestConsumer(consumer) as t:
        await t.publish("events", b"a")
        await t.settle()
        assert t.batches == []  # waiting for more, on the (virtual) clock
        await t.advance(1.0)
        await t.publish("events", b"b")
        await t.settle()
        assert t.batches == []
        await t.advance(1.0)
        assert [offsets(b) for b in t.batches] == [[0, 1]]
        await t.publish("events", b"c")
        await t.advance(2.0)
        assert [offsets(b) for b in t.batches] == [[0, 1], [2]]


async def test_max_wait_zero_handles_what_is_there_at_once() -> None:
    """With max_wait=0 a batch is what is queued, without waiting on the clock."""
    consumer = Consumer(make_config())

    @consumer.batch_handler("events", max_size=100, max_wait=0)
    async def on_events(messages: list[Message]) -> None:
        pass

    async with TestConsumer(consumer) as t:
        await t.publish("events", b"a")
        await t.settle()
        assert [offsets(b) for b in t.batches] == [[0]]


async def test_a_batch_never_mixes_partitions() -> None:
    """Records of two partitions come in separate batches, each in its partition's order."""
    consumer = Consumer(make_config())

    @consumer.batch_handler("events", max_size=100, max_wait=1.0)
    async def on_events(messages: list[Message]) -> None:
        pass

    t = TestConsumer(consumer, partitions=2)
    for n in range(6):
        await t.publish("events", b"%d" % n, partition=n % 2)
    async with t:
        await t.drain()
    assert sorted((b[0].partition, offsets(b)) for b in t.batches) == [
        (0, [0, 1, 2]),
        (1, [0, 1, 2]),
    ]
    for batch in t.batches:
        assert {m.partition for m in batch} == {batch[0].partition}


# Outcomes


async def test_batch_failed_retries_exactly_the_named_messages_with_their_errors() -> None:
    """BatchFailed hands on only its messages (each with its error); the rest are done once."""
    consumer = Consumer(make_config())

    @consumer.batch_handler("events", max_size=10, max_wait=0)
    async def on_events(messages: list[Message]) -> None:
        if messages[0].attempt == 1:
            raise BatchFailed(
                {messages[1]: RuntimeError("one"), messages[3]: NonRetryableError("bad")}
            )

    t = TestConsumer(consumer)
    for n in range(5):
        await t.publish("events", b"%d" % n)
    async with t:
        await t.drain()
    [first, retried] = t.batches
    assert offsets(first) == [0, 1, 2, 3, 4]
    assert [(m.attempt, m.value) for m in retried] == [(2, b"1")]
    assert retried[0].provenance is not None
    assert retried[0].provenance.error_message == "one"
    [dead] = t.dead_letters("events")
    assert (dead.value, dead.error_type) == (b"3", "kafka_retry.NonRetryableError")
    outcomes = [(c.message.value, c.error) for c in t.history if c.message.attempt == 1]
    assert [(value, type(error).__name__) for value, error in outcomes] == [
        (b"0", "NoneType"),
        (b"1", "RuntimeError"),
        (b"2", "NoneType"),
        (b"3", "NonRetryableError"),
        (b"4", "NoneType"),
    ]
    assert t.broker.committed("shop", "events") == 5


async def test_any_other_exception_fails_every_message_on_its_own() -> None:
    """An exception that is not BatchFailed fails each message; each is retried with its attempt."""
    consumer = Consumer(make_config(retry_intervals=[5, 10]))

    @consumer.batch_handler("events", max_size=10, max_wait=0)
    async def on_events(messages: list[Message]) -> None:
        raise RuntimeError("store down")

    t = TestConsumer(consumer)
    for n in range(3):
        await t.publish("events", b"%d" % n)
    async with t:
        await t.drain()
    attempts = sorted({m.attempt for b in t.batches for m in b})
    assert attempts == [1, 2, 3]
    assert all(len({m.attempt for m in b}) == 1 for b in t.batches)
    assert sorted(d.value or b"" for d in t.dead_letters("events")) == [b"0", b"1", b"2"]
    assert {d.error_message for d in t.dead_letters("events")} == {"store down"}


async def test_the_done_prefix_waits_for_a_failed_message_hand_off() -> None:
    """Offsets past a failed message are done only once its own hand-off is acknowledged."""
    backend = GatedBackend()

    async def on_events(messages: list[Message]) -> None:
        raise BatchFailed({messages[1]: RuntimeError("x")})

    worker = batch_worker(backend, on_events, max_size=10)
    worker.start()
    worker.submit([record(0), record(1), record(2)])
    await backend.arrived.wait()
    assert worker.position() == 1  # 0 succeeded; 1 waits for its hand-off, and 2 behind it
    backend.gate.set()
    await backend.acknowledged.wait()
    await asyncio.sleep(0)  # the hand-off task's done callback runs on the next turn
    assert worker.position() == 3
    await worker.stop(1.0)


async def test_fetched_lists_are_cut_into_batches_in_order_across_fetches() -> None:
    """A fetch longer than max_size is cut in offset order; its rest joins the next fetch's head."""
    seen: list[list[int]] = []
    done = asyncio.Event()

    async def on_events(messages: list[Message]) -> None:
        seen.append(offsets(messages))
        if messages[-1].offset == 12:
            done.set()

    worker = batch_worker(None, on_events, max_size=4)
    worker.submit([record(n) for n in range(10)])
    worker.submit([record(n) for n in range(10, 13)])
    worker.start()
    await done.wait()
    assert seen == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12]]
    assert worker.position() == 13
    await worker.stop(1.0)


async def test_a_stop_while_a_batch_gathers_leaves_it_for_the_next_owner() -> None:
    """A partial batch still waiting for max_wait at the stop is neither handled nor committed."""
    consumer = Consumer(make_config())

    @consumer.batch_handler("events", max_size=100, max_wait=60.0)
    async def on_events(messages: list[Message]) -> None:
        pass

    async with TestConsumer(consumer) as t:
        await t.publish("events", b"a")
        await t.settle()
    assert t.batches == []
    assert t.broker.committed("shop", "events") is None


async def test_handler_timeout_bounds_the_whole_batch_call() -> None:
    """A batch call past handler_timeout fails each of its messages with the timeout."""
    consumer = Consumer(make_config(handler_timeout=0.01))
    never = asyncio.Event()

    @consumer.batch_handler("events", max_size=10, max_wait=0)
    async def on_events(messages: list[Message]) -> None:
        if messages[0].attempt == 1:
            await never.wait()

    t = TestConsumer(consumer)
    for n in range(2):
        await t.publish("events", b"%d" % n)
    async with t:
        await t.drain()
    [retried] = [b for b in t.batches if b[0].attempt == 2]
    assert [m.value for m in retried] == [b"0", b"1"]
    assert {m.provenance.error_message for m in retried if m.provenance} == {
        "handler timed out after 0.01s"
    }


async def test_a_gathering_batch_lets_a_paused_partition_fetch_again() -> None:
    """While a batch waits for more records, the tier hears it may resume the partition."""
    drained = asyncio.Event()
    called = asyncio.Event()
    handled: list[list[Message]] = []

    async def on_events(messages: list[Message]) -> None:
        handled.append(messages)
        called.set()

    spec = BatchHandler(on_events, 10, 60.0)
    dispatcher = dispatcher_for(GatedBackend(), on_events)
    tp = TopicPartition("events", 0)
    clock = VirtualClock()
    worker = BatchPartitionWorker(tp, dispatcher, 10, lambda tp: drained.set(), clock, spec)
    worker.start()
    worker.submit([record(0), record(1)])
    await drained.wait()
    assert handled == []  # still gathering: max_wait of clock time has not passed
    clock.advance(60.0)
    await called.wait()
    assert [offsets(batch) for batch in handled] == [[0, 1]]
    await worker.stop(1.0)


async def test_batch_failed_naming_a_stranger_fails_the_batch_with_a_clear_error() -> None:
    """A BatchFailed key not in the batch fails every message with a ValueError naming it."""
    batch = [message(0), message(1)]
    errors = batch_errors(batch, BatchFailed({message(7): RuntimeError("x")}))
    assert all(isinstance(e, ValueError) for e in errors)
    assert "not in this batch: events[0]@7" in str(errors[0])


def test_batch_failed_refuses_values_that_are_not_exceptions() -> None:
    """A value that is not an exception instance (or a key that is not a Message) is a TypeError."""
    with pytest.raises(TypeError, match=r"exception instance for events\[0\]@0, got 'oops'"):
        BatchFailed({message(0): "oops"})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="exception instance"):
        BatchFailed({message(0): RuntimeError})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="got key 3"):
        BatchFailed({3: RuntimeError()})  # type: ignore[dict-item]


def test_an_empty_batch_failed_means_every_message_succeeded() -> None:
    """BatchFailed({}) fails nothing."""
    assert batch_errors([message(0)], BatchFailed({})) == [None]


def test_messages_are_hashable() -> None:
    """Message is hashable, by value, so it can key a BatchFailed."""
    assert {message(1): 1}[message(1)] == 1


# The postgres backend


async def test_postgres_poller_passes_a_claimed_batch_per_partition() -> None:
    """Retried rows reach the batch handler in batches of max_size; BatchFailed rows move on."""
    consumer = Consumer(make_config("postgres", retry_intervals=[5, 10]))

    @consumer.batch_handler("events", max_size=3, max_wait=0)
    async def on_events(messages: list[Message]) -> None:
        if messages[0].attempt == 1:
            raise RuntimeError("later")
        if messages[0].attempt == 2:
            raise BatchFailed({m: RuntimeError("again") for m in messages if m.value == b"4"})

    t = TestConsumer(consumer)
    for n in range(5):
        await t.publish("events", b"%d" % n)
    async with t:
        await t.drain()
    retried = [b for b in t.batches if b[0].attempt == 2]
    assert [len(b) for b in retried] == [3, 2]
    assert sorted(m.value or b"" for b in retried for m in b) == [b"0", b"1", b"2", b"3", b"4"]
    assert [[m.value for m in b] for b in t.batches if b[0].attempt == 3] == [[b"4"]]
    assert t.table is not None
    assert [row["state"] for row in t.table.rows("shop")] == [SUCCEEDED] * 5
    assert t.dead_letters("events") == []


# Metrics


async def test_metrics_count_each_message_and_each_batch() -> None:
    """messages_handled counts per message; the batch size and duration histograms per call."""
    registry = CollectorRegistry()
    observer = PrometheusObserver(Metrics.for_registry(registry))

    async def on_events(messages: list[Message]) -> None:
        raise BatchFailed({messages[0]: RuntimeError("x")})

    dispatcher = dispatcher_for(GatedBackend(), on_events, observer=observer)
    call = dispatcher.batch_caller("events")
    batch = [message(n) for n in range(4)]
    errors = await call(batch)
    assert errors is not None
    for m, error in zip(batch, errors, strict=True):
        if error is not None:
            dispatcher.failure(m, error)
    assert await call(batch[:2]) is not None

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"topic": "events", "tier": "main", **labels})

    assert sample("kafka_retry_messages_handled_total", outcome="success") == 4
    assert sample("kafka_retry_messages_handled_total", outcome="retry") == 1
    assert sample("kafka_retry_batch_size_count") == 2
    assert sample("kafka_retry_batch_size_sum") == 6
    assert sample("kafka_retry_batch_size_bucket", le="2.0") == 1
    assert sample("kafka_retry_batch_duration_seconds_count") == 2
    assert sample("kafka_retry_handler_duration_seconds_count") is None


# Registration


async def test_handler_and_batch_handler_for_one_topic_is_a_setup_error() -> None:
    """A topic gets a handler or a batch handler, in either order or in the constructor."""

    async def one(message: Message) -> None:
        pass

    async def many(messages: list[Message]) -> None:
        pass

    consumer = Consumer(make_config(), {"events": one})
    with pytest.raises(SetupError, match="'events' has a handler already"):
        consumer.batch_handler("events")(many)
    consumer = Consumer(make_config(), batch_handlers={"events": many})
    with pytest.raises(SetupError, match="'events' has a batch handler already"):
        consumer.handler("events")(one)
    with pytest.raises(SetupError, match="not both"):
        Consumer(make_config(), {"events": one}, batch_handlers={"events": many})


def test_a_batch_handler_must_be_async() -> None:
    """A plain function is refused at registration, named."""

    def many(messages: list[Message]) -> None:
        pass

    with pytest.raises(SetupError, match=r"handler .*many for topic 'events' must be an async"):
        Consumer(make_config()).batch_handler("events")(many)
    with pytest.raises(SetupError, match="must be an async function"):
        Consumer(make_config(), batch_handlers={"events": many})


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"max_size": 0}, "max_size"),
        ({"max_size": 2.5}, "max_size"),
        ({"max_size": True}, "max_size"),
        ({"max_wait": -1}, "max_wait"),
        ({"max_wait": float("nan")}, "max_wait"),
        ({"max_wait": "1"}, "max_wait"),
    ],
)
def test_bad_limits_are_config_errors_naming_the_argument(
    arguments: dict[str, Any], field: str
) -> None:
    """max_size must be an int >= 1 and max_wait a finite number >= 0."""

    async def many(messages: list[Message]) -> None:
        pass

    with pytest.raises(ConfigError, match=rf"^{field}: batch handler .*many") as caught:
        Consumer(make_config()).batch_handler("events", **arguments)(many)
    assert caught.value.field == field


def test_a_batch_of_payloads_is_refused_naming_the_handler() -> None:
    """list[bytes] (a typed batch) is a SetupError; list[Message] and no annotation are fine."""

    async def typed(values: list[bytes]) -> None:
        pass

    async def plain(messages):  # type: ignore[no-untyped-def]
        pass

    async def two(messages: list[Message], extra: int) -> None:
        pass

    consumer = Consumer(make_config())
    with pytest.raises(SetupError, match=r"typed .*takes values: list\[bytes\]"):
        consumer.batch_handler("events")(typed)
    consumer.batch_handler("events")(plain)
    with pytest.raises(SetupError, match="one positional parameter"):
        consumer.batch_handler("events")(two)


@pytest.mark.parametrize("ordering", ["key", "none"])
def test_batch_handlers_need_partition_ordering(ordering: str) -> None:
    """ordering='key' or 'none' with a batch handler is a SetupError naming the setting."""

    async def many(messages: list[Message]) -> None:
        pass

    consumer = Consumer(make_config(ordering=ordering))
    with pytest.raises(
        SetupError, match=rf"ordering='partition' \(config.ordering is '{ordering}'\)"
    ):
        consumer.batch_handler("events")(many)


async def test_a_topic_without_any_handler_is_still_a_setup_error() -> None:
    """A config with two topics and a batch handler for one only does not start."""
    config = Config(bootstrap_servers="x:1", group="g", topics=["events", "other"], metrics=False)

    async def many(messages: list[Message]) -> None:
        pass

    with pytest.raises(SetupError, match="no handler for topic"):
        await Consumer(config, batch_handlers={"events": many}).run()


async def test_ordered_retries_hold_a_key_between_batches() -> None:
    """A batch's failed key: the key's messages in later batches wait; the others are handled."""
    consumer = Consumer(make_config("postgres", retry_intervals=[5], ordered_retries=True))

    @consumer.batch_handler("events", max_size=2, max_wait=0)
    async def on_events(messages: list[Message]) -> None:
        failed = {m: RuntimeError("a fails once") for m in messages if m.value == b"a"}
        if failed and messages[0].attempt == 1 and len(t.batches) == 1:
            raise BatchFailed(failed)

    t = TestConsumer(consumer)
    for key, value in ((b"k1", b"a"), (b"k2", b"x"), (b"k1", b"b"), (b"k2", b"y")):
        await t.publish("events", value, key=key)
    async with t:
        await t.drain()
    assert [[m.value for m in b] for b in t.batches][:2] == [[b"a", b"x"], [b"y"]]
    k1 = [(m.value, m.attempt) for b in t.batches for m in b if m.key == b"k1"]
    assert k1 == [(b"a", 1), (b"a", 2), (b"b", 1)]
