"""Lifecycle edges of the real runtime, in memory: failures the final drain must not swallow."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from kafka_retry import Config, Consumer, ConsumerState, DatabaseConfig, Message
from kafka_retry.testing import MemoryBroker, MemoryRetryTable, MemoryTransport, VirtualClock
from tests.integration.support import eventually


class BrokenTable(MemoryRetryTable):
    """A retry table whose inserts fail for good (not an outage that retrying would end)."""

    async def insert(self, params: Sequence[object]) -> None:
        raise RuntimeError("the table is gone")


async def test_a_hand_off_failing_during_the_final_drain_ends_run_with_it() -> None:
    """A failure that cannot be handed on while stopping: run() raises it, not returns."""
    clock = VirtualClock()
    broker = MemoryBroker(clock=clock)
    broker.create_topic("t")
    config = Config(
        bootstrap_servers="memory:9092",
        group="g",
        topics=["t"],
        retry_intervals=[60],
        retry_backend="postgres",
        database=DatabaseConfig(),
        metrics=False,
    )
    started, release = asyncio.Event(), asyncio.Event()

    async def fails_while_stopping(message: Message) -> None:
        started.set()
        await release.wait()
        raise ValueError("upstream down")

    consumer = Consumer(
        config,
        {"t": fails_while_stopping},
        clock=clock,
        transport=MemoryTransport(broker),
        retry_table=BrokenTable(clock, "public.kafka_consumer_retries"),
    )
    running = asyncio.create_task(consumer.run())
    await consumer.wait_ready()
    broker.append("t", b"v", key=b"k")
    await started.wait()
    consumer.request_stop()
    await eventually(lambda: consumer.state is ConsumerState.STOPPING)
    release.set()
    with pytest.raises(RuntimeError, match="the table is gone"):
        await running
    assert broker.committed("g", "t") in (None, 0)  # offset 0 was never done: read again
