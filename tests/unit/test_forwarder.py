"""The Kafka forwarder and records too large for their next topic."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from kafka_retry import Message
from kafka_retry.message import H_ERROR_MESSAGE
from kafka_retry.retry.base import Failure
from kafka_retry.retry.kafka import KafkaForwarder
from kafka_retry.testing._clients import MemoryBatch
from kafka_retry.topology import build_chain, default_topic_name

CHAIN = build_chain("g", "t", 1, default_topic_name)
RETRY1, DEAD = CHAIN.topics[1], CHAIN.dead_letter


class FakeProducer:
    """Refuses sends to topics in ``too_large``; records what it accepted."""

    def __init__(self, too_large: set[str]) -> None:
        self.too_large = too_large
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def send(self, topic: str, **record: Any) -> asyncio.Future[None]:
        if topic in self.too_large:
            raise MessageSizeTooLargeError()
        self.sent.append((topic, record))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> MemoryBatch:
        return MemoryBatch()

    async def send_batch(
        self, batch: MemoryBatch, topic: str, *, partition: int
    ) -> asyncio.Future[None]:
        done: asyncio.Future[None] | None = None
        for key, value, timestamp, headers in batch.records:
            done = await self.send(
                topic, key=key, value=value, timestamp_ms=timestamp, headers=headers
            )
        assert done is not None
        return done


class StepClock:
    """Sleeps return at once; ``on_sleep`` may change the world between tries."""

    def __init__(self, on_sleep: Callable[[int], None]) -> None:
        self.sleeps = 0
        self._on_sleep = on_sleep

    def time(self) -> float:
        return 1_700_000_000.0

    def call_later(self, delay: float, callback: Callable[[], None]) -> Any:
        raise NotImplementedError

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self._on_sleep(self.sleeps)


def failure(attempt: int = 1) -> Failure:
    message = Message("t", 0, 5, b"k", b"v" * 10, (("app", b"1"),), 1, "t", attempt)
    return Failure(message, "ValueError", "boom", 1_700_000_000_000, "g", final=False)


def forwarder(producer: FakeProducer, clock: StepClock) -> KafkaForwarder:
    return KafkaForwarder(producer, {"t": CHAIN}, (60.0,), clock)


async def test_too_large_for_the_retry_topic_goes_to_the_dead_letter() -> None:
    """A retry topic that refuses the size is not retried forever: the dead letter says why."""
    producer = FakeProducer(too_large={RETRY1})
    clock = StepClock(lambda n: None)
    await forwarder(producer, clock).schedule(failure())
    [(topic, record)] = producer.sent
    assert topic == DEAD
    headers = dict(record["headers"])
    text = headers[H_ERROR_MESSAGE].decode()
    assert text.startswith(f"record too large for {RETRY1} (MessageSizeTooLargeError)")
    assert text.endswith("last error: boom")
    assert clock.sleeps == 0


async def test_too_large_for_the_dead_letter_waits_until_the_limit_is_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing is dropped: the send is retried, logged as an error naming the fix."""
    producer = FakeProducer(too_large={RETRY1, DEAD})

    def operator_raises_limit(sleeps: int) -> None:
        if sleeps == 3:
            producer.too_large.clear()

    clock = StepClock(operator_raises_limit)
    await forwarder(producer, clock).schedule(failure())
    assert [topic for topic, _ in producer.sent] == [DEAD]
    assert clock.sleeps == 3
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any("max.message.bytes" in r.getMessage() for r in errors)


async def test_outages_are_still_retried_on_the_retry_topic() -> None:
    """A timeout is an outage, not a size problem: the retry topic gets the record."""
    producer = FakeProducer(too_large=set())
    original = producer.send
    calls = 0

    async def flaky(topic: str, **record: Any) -> asyncio.Future[None]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KafkaTimeoutError()
        return await original(topic, **record)

    producer.send = flaky  # type: ignore[method-assign]
    clock = StepClock(lambda n: None)
    await forwarder(producer, clock).schedule(failure())
    assert [topic for topic, _ in producer.sent] == [RETRY1]
    assert clock.sleeps == 1
