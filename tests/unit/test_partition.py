"""PartitionWorker: a failed hand-off never leaves a partition silently stuck."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition

from kafka_retry import CircuitBreaker, Config, Message
from kafka_retry._clock import SystemClock
from kafka_retry.retry.base import Failure
from kafka_retry.runtime.breaker import Breakers
from kafka_retry.runtime.dispatch import Dispatcher, Handler
from kafka_retry.runtime.partition import PartitionWorker


class Broken(Exception):
    """Not a Kafka or database error: nothing retries it."""


class BrokenBackend:
    """A retry backend and dead-letter sink whose hand-off fails with a bug."""

    async def schedule(self, failure: Failure) -> None:
        raise Broken("hand-off failed")

    async def dead_letter(self, failure: Failure) -> None:
        raise Broken("hand-off failed")


async def failing(message: Message) -> None:
    raise RuntimeError("handler failed")


def record(offset: int) -> ConsumerRecord:
    return ConsumerRecord(
        topic="t",
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"k",
        value=b"v",
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=1,
        headers=(),
    )


def dispatcher_for(config: Config, handler: Handler, backend: Any) -> Dispatcher:
    """A main-tier dispatcher of topic ``t`` whose failures all go to ``backend``."""
    return Dispatcher(
        config=config,
        handlers={"t": handler},
        main_of={"t": "t"},
        attempt=1,
        retry=backend,
        dead_letters=backend,
        clock=SystemClock(),
    )


async def test_a_failed_hand_off_ends_an_idle_worker() -> None:
    """A hand-off that fails after the partition's last record ends the worker with its error."""
    config = Config(
        bootstrap_servers="localhost:9092", group="g", topics=["t"], retry_intervals=[1]
    )
    backend = BrokenBackend()
    dispatcher = dispatcher_for(config, failing, backend)
    worker = PartitionWorker(TopicPartition("t", 0), dispatcher, 10, lambda tp: None)
    task = worker.start()
    worker.submit([record(0)])
    with pytest.raises(Broken):
        await asyncio.wait_for(task, 5)
    assert worker.position() == 0  # not done: redelivered after the crash


async def test_handlers_that_never_await_do_not_hold_the_loop_for_a_whole_batch() -> None:
    """Other tasks (the poll loop: commits, heartbeats) run while a long batch is handled."""
    handled = 0

    async def busy(message: Message) -> None:
        nonlocal handled
        handled += 1  # returns without ever awaiting

    config = Config(bootstrap_servers="localhost:9092", group="g", topics=["t"])
    backend = BrokenBackend()
    dispatcher = dispatcher_for(config, busy, backend)
    drained = asyncio.Event()
    worker = PartitionWorker(TopicPartition("t", 0), dispatcher, 10, lambda tp: drained.set())
    worker.start()
    worker.submit([record(offset) for offset in range(10_000)])
    await asyncio.create_task(asyncio.sleep(0))  # one turn of the loop for someone else
    seen = handled
    await asyncio.wait_for(drained.wait(), 10)
    await worker.stop(1.0)
    assert seen < 10_000, "the whole batch ran before any other task could"
    assert worker.position() == 10_000


class SlowBackend:
    """A retry backend whose hand-off takes a moment, then succeeds."""

    def __init__(self) -> None:
        self.scheduled: list[int] = []

    async def schedule(self, failure: Failure) -> None:
        await asyncio.sleep(0.05)
        self.scheduled.append(failure.message.offset)

    async def dead_letter(self, failure: Failure) -> None:
        await self.schedule(failure)


async def test_a_stop_waits_for_the_hand_off_of_the_record_being_handled() -> None:
    """A record that fails while the worker stops is handed off within the drain: it is done."""
    started = asyncio.Event()

    async def slow_failure(message: Message) -> None:
        started.set()
        await asyncio.sleep(0.05)
        raise RuntimeError("failed while stopping")

    config = Config(
        bootstrap_servers="localhost:9092", group="g", topics=["t"], retry_intervals=[1]
    )
    backend = SlowBackend()
    dispatcher = dispatcher_for(config, slow_failure, backend)
    worker = PartitionWorker(TopicPartition("t", 0), dispatcher, 10, lambda tp: None)
    worker.start()
    worker.submit([record(0)])
    await started.wait()
    await worker.stop(drain_timeout=5.0)
    assert backend.scheduled == [0]
    assert worker.position() == 1  # committed as done: no redelivery after a clean stop


class SharedBackend:
    """A batching backend: every failure started rides one future, settled by the test."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def start(self, failure: Failure) -> asyncio.Future[None]:
        self.started.append(failure.message.offset)
        return self.future

    async def schedule(self, failure: Failure) -> None:
        raise AssertionError("the batched path is expected")

    async def dead_letter(self, failure: Failure) -> None:
        raise AssertionError("the batched path is expected")


async def test_failures_sharing_a_hand_off_are_done_only_when_it_is_stored() -> None:
    """Three failures, one future: nothing is committable before it, everything after."""
    config = Config(
        bootstrap_servers="localhost:9092", group="g", topics=["t"], retry_intervals=[1]
    )
    backend = SharedBackend()
    drained = asyncio.Event()
    dispatcher = dispatcher_for(config, failing, backend)
    worker = PartitionWorker(TopicPartition("t", 0), dispatcher, 10, lambda tp: drained.set())
    worker.start()
    worker.submit([record(offset) for offset in range(3)])
    await drained.wait()
    assert backend.started == [0, 1, 2]
    assert worker.position() == 0
    backend.future.set_result(None)
    await asyncio.sleep(0)  # the future's callbacks run on the next turn of the loop
    assert worker.position() == 3
    await worker.stop(1.0)


class StoringBackend:
    """Hand-offs that succeed at once."""

    async def schedule(self, failure: Failure) -> None:
        return None

    async def dead_letter(self, failure: Failure) -> None:
        return None


async def test_a_worker_held_at_an_open_breaker_stops_without_waiting_for_the_drain() -> None:
    """A revoke does not wait drain_timeout for a call that the breaker will not let start."""
    config = Config(
        bootstrap_servers="localhost:9092",
        group="g",
        topics=["t"],
        retry_intervals=[1],
        circuit_breaker=CircuitBreaker(
            failure_ratio=0.5, window=2, open_for=3600.0, max_open_for=3600.0
        ),
    )
    clock = SystemClock()
    breakers = Breakers(config.circuit_breaker, ["t"], clock)
    calls = 0

    async def down(message: Message) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("down")

    dispatcher = Dispatcher(
        config=config,
        handlers={"t": down},
        main_of={"t": "t"},
        attempt=1,
        retry=StoringBackend(),
        dead_letters=StoringBackend(),
        clock=clock,
        breakers=breakers,
    )
    breaker = breakers.get("t")
    assert breaker is not None
    worker = PartitionWorker(TopicPartition("t", 0), dispatcher, 10, lambda tp: None)
    task = worker.start()
    worker.submit([record(offset) for offset in range(3)])
    # Polled: being held is a state of the breaker, with no event of its own.
    while not breaker.holds(task):  # noqa: ASYNC110  (two failures open it; the third waits)
        await asyncio.sleep(0)
    await worker.stop(drain_timeout=3600.0)  # without the fix: an hour
    assert calls == 2
    assert worker.position() == 2  # the held record is redelivered
    breakers.stop()
