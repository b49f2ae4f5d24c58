"""The pytest plugin: loaded through its entry point; in-memory fixtures fit together."""

from __future__ import annotations

import pytest

from kafka_retry import Config, Message
from kafka_retry.testing import MakeTestConsumer, MemoryBroker, VirtualClock


def test_plugin_is_registered(pytestconfig: pytest.Config) -> None:
    """pytest loads kafka_retry.testing.pytest_plugin by itself."""
    assert pytestconfig.pluginmanager.has_plugin("kafka_retry")


async def test_fixtures_share_broker_and_clock(
    test_consumer: MakeTestConsumer, memory_broker: MemoryBroker, virtual_clock: VirtualClock
) -> None:
    """test_consumer builds on memory_broker and virtual_clock."""
    config = Config(bootstrap_servers="k:9092", group="g", topics=["t"], retry_intervals=[30])
    attempts: list[int] = []

    async def handler(message: Message) -> None:
        attempts.append(message.attempt)
        if message.attempt == 1:
            raise ValueError("again")

    async with test_consumer(config, {"t": handler}) as t:
        assert t.broker is memory_broker
        assert t.clock is virtual_clock
        await t.publish("t", b"v")
        await t.drain()
    assert attempts == [1, 2]
    assert virtual_clock.advanced == 30
    assert memory_broker.records("retry1.g.t")[0].value == b"v"
