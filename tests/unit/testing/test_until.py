"""consume_until: runs until a condition or a timeout, and always stops the consumer."""

from __future__ import annotations

import asyncio
import time

import pytest

from kafka_retry import Config, Consumer, ConsumerState, Message, SetupError
from kafka_retry.runtime.dispatch import Handler
from kafka_retry.testing import MemoryBroker, MemoryTransport, VirtualClock, consume_until

CONFIG = Config(bootstrap_servers="localhost:9092", group="g", topics=["t"])


def in_memory(handlers: dict[str, Handler]) -> tuple[Consumer, MemoryBroker]:
    broker = MemoryBroker(clock=VirtualClock())
    broker.create_topic("t")
    consumer = Consumer(CONFIG, handlers, clock=broker.clock, transport=MemoryTransport(broker))
    return consumer, broker


async def test_returns_true_once_the_condition_holds() -> None:
    """A callable condition: True as soon as it holds; the consumer is stopped and committed."""
    seen: list[bytes | None] = []

    async def handler(message: Message) -> None:
        seen.append(message.value)

    consumer, broker = in_memory({"t": handler})
    broker.append("t", b"v")
    assert await consume_until(consumer, lambda: seen == [b"v"], timeout=5)
    assert consumer.state is ConsumerState.STOPPED
    assert broker.committed("g", "t") == 1


async def test_an_event_works_as_the_condition() -> None:
    """An asyncio.Event set by the handler ends the run."""
    done = asyncio.Event()

    async def handler(message: Message) -> None:
        done.set()

    consumer, broker = in_memory({"t": handler})
    broker.append("t", b"v")
    assert await consume_until(consumer, done, timeout=5)


async def test_returns_false_at_the_timeout() -> None:
    """Nothing happens: False after the timeout, and the consumer is stopped."""

    async def handler(message: Message) -> None:
        pass

    consumer, _ = in_memory({"t": handler})
    started = time.perf_counter()
    assert not await consume_until(consumer, lambda: False, timeout=0.1)
    assert time.perf_counter() - started < 1
    assert consumer.state is ConsumerState.STOPPED


async def test_a_condition_that_holds_already_starts_nothing() -> None:
    """True at once; the consumer never ran, and cannot run afterwards."""
    consumer, _ = in_memory({})
    assert await consume_until(consumer, lambda: True, timeout=5)
    assert consumer.state is ConsumerState.STOPPED


async def test_consumer_errors_propagate() -> None:
    """A consumer that cannot start raises its error, not False."""
    consumer, _ = in_memory({})
    with pytest.raises(SetupError, match="no handler"):
        await consume_until(consumer, lambda: False, timeout=5)


async def test_handlers_go_with_a_config_only() -> None:
    """A Consumer has its own handlers."""
    consumer, _ = in_memory({})
    with pytest.raises(TypeError, match="with a Config"):
        await consume_until(consumer, lambda: True, 1, handlers={})
