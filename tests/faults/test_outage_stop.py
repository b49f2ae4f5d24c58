"""Stopping while Kafka does not answer: stop() ends within its bounds, and nothing is lost."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from kafka_retry import Config, Consumer, Message, _kafka, devstack
from tests.faults.services import Services
from tests.integration.support import create_topics, eventually, fresh, produce

pytestmark = pytest.mark.faults


@contextlib.contextmanager
def frozen_broker(services: Services) -> Iterator[None]:
    """The broker stopped with SIGSTOP: connections stay open, nothing answers."""
    [kafka] = [s for s in devstack.status(services.state_dir) if s.name == "kafka" and s.running]
    assert kafka.pid is not None
    os.kill(kafka.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(kafka.pid, signal.SIGCONT)


def config_for(services: Services, topic: str, group: str, **fields: Any) -> Config:
    return Config(
        bootstrap_servers=services.bootstrap,
        group=group,
        topics=[topic],
        retry_intervals=[60],
        drain_timeout=2.0,
        session_timeout_ms=10_000,
        rebalance_timeout_ms=10_000,
        metrics=False,
        **fields,
    )


@pytest.mark.timeout(300)
async def test_stop_during_a_broker_outage_ends_and_loses_nothing(
    fault_services: Services,
) -> None:
    """A stop while Kafka is frozen returns (commit and close are bounded); the work comes back."""
    topic, group = fresh("outage"), fresh("g")
    await create_topics(fault_services.bootstrap, topic)
    await produce(fault_services.bootstrap, topic, [(b"k", b"done", []), (b"k", b"held", [])])
    seen: list[Message] = []
    held = asyncio.Event()

    async def handler(message: Message) -> None:
        seen.append(message)
        if message.value == b"held":
            held.set()
            await asyncio.Event().wait()  # still running at the stop: cancelled, never done

    # No periodic commit: what is done is committed at stop, if Kafka takes it.
    config = config_for(fault_services, topic, group, commit_interval=3600.0)
    consumer = Consumer(config, {topic: handler})
    running = asyncio.create_task(consumer.run())
    await consumer.wait_ready()
    await held.wait()
    with frozen_broker(fault_services):
        # A bound on the test, not a figure: without the fix this waits for Kafka.
        async with asyncio.timeout(config.drain_timeout + 60):
            await consumer.stop()
            await running
    # Frozen brokers come back slowly (their controller lease ran out): restart it.
    await asyncio.to_thread(fault_services.stop_kafka)
    await asyncio.to_thread(fault_services.start_kafka)
    again: list[Message] = []

    async def second(message: Message) -> None:
        again.append(message)

    async with Consumer(config_for(fault_services, topic, group), {topic: second}):
        await eventually(lambda: any(m.value == b"held" for m in again), within=120)
    await _kafka.finish_late_closes()
    # The record not done at the stop comes back; the done one may (its commit
    # may or may not have reached Kafka), and nothing else does.
    assert [m.value for m in again] in ([b"held"], [b"done", b"held"])
