"""Concurrent dispatch: per-key order, bounded in-flight work, slow handlers keep membership."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from typing import Any

import pytest

from kafka_retry import Consumer, Message

from .support import config_for, create_topics, eventually, fresh, produce

pytestmark = pytest.mark.integration


class Gauge:
    """Counts handlers running at once."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    def enter(self) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        self.now -= 1


async def test_key_ordering_keeps_each_keys_sequence(kafka_service: Any) -> None:
    """10,000 messages over 100 keys with random latency: every key's sequence stays in order."""
    topic = fresh()
    bootstrap = kafka_service.bootstrap_servers
    await create_topics(bootstrap, topic, partitions=2)
    records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]] = [
        (f"key-{i % 100}".encode(), str(i).encode(), []) for i in range(10_000)
    ]
    await produce(bootstrap, topic, records)
    config = config_for(kafka_service, topics=[topic], ordering="key", max_in_flight=50)
    seen: dict[bytes, list[int]] = defaultdict(list)
    gauge = Gauge()
    rng = random.Random(7)

    async def handler(message: Message) -> None:
        gauge.enter()
        try:
            if rng.random() < 0.2:
                await asyncio.sleep(rng.random() / 1000)
            assert message.key is not None and message.value is not None
            seen[message.key].append(int(message.value))
        finally:
            gauge.leave()

    async with Consumer(config, {topic: handler}):
        await eventually(lambda: sum(map(len, seen.values())) >= 10_000, within=120)
    assert len(seen) == 100
    for key, values in seen.items():
        assert values == sorted(values), key
        assert len(values) == 100
    assert 1 < gauge.peak <= 50


async def test_no_ordering_is_concurrent_and_bounded(kafka_service: Any) -> None:
    """ordering="none" runs handlers concurrently, never more than max_in_flight at once."""
    topic = fresh()
    bootstrap = kafka_service.bootstrap_servers
    await create_topics(bootstrap, topic)
    await produce(bootstrap, topic, [(None, str(i).encode(), []) for i in range(500)])
    config = config_for(kafka_service, topics=[topic], ordering="none", max_in_flight=20)
    gauge = Gauge()
    done: set[bytes] = set()

    async def handler(message: Message) -> None:
        gauge.enter()
        try:
            await asyncio.sleep(0.002)
            assert message.value is not None
            done.add(message.value)
        finally:
            gauge.leave()

    async with Consumer(config, {topic: handler}):
        await eventually(lambda: len(done) == 500, within=60)
    assert 1 < gauge.peak <= 20


async def test_failures_under_concurrency_reach_retry(kafka_service: Any) -> None:
    """With ordering="key" a failure is still handed to retry1 and retried once."""
    topic = fresh()
    bootstrap = kafka_service.bootstrap_servers
    await create_topics(bootstrap, topic)
    await produce(bootstrap, topic, [(b"k%d" % (i % 5), b"%d" % i, []) for i in range(50)])
    config = config_for(
        kafka_service, topics=[topic], ordering="key", retry_intervals=[0.5], max_in_flight=10
    )
    attempts: dict[bytes, list[int]] = defaultdict(list)

    async def handler(message: Message) -> None:
        assert message.value is not None
        attempts[message.value].append(message.attempt)
        if message.attempt == 1 and int(message.value) % 10 == 0:
            raise ValueError("flaky")

    async with Consumer(config, {topic: handler}):
        await eventually(lambda: sum(map(len, attempts.values())) == 55, within=60)
    for value, tries in attempts.items():
        assert tries == ([1, 2] if int(value) % 10 == 0 else [1]), value


async def test_handler_slower_than_poll_interval_keeps_membership(kafka_service: Any) -> None:
    """A handler running past max_poll_interval_ms does not get the consumer thrown out."""
    topic = fresh()
    bootstrap = kafka_service.bootstrap_servers
    await create_topics(bootstrap, topic)
    await produce(bootstrap, topic, [(b"slow", b"1", []), (b"next", b"2", [])])
    config = config_for(kafka_service, topics=[topic], max_poll_interval_ms=1500)
    handled: list[bytes | None] = []

    async def handler(message: Message) -> None:
        if message.key == b"slow":
            await asyncio.sleep(4)  # the slow upstream being simulated, > max_poll_interval
        handled.append(message.key)

    consumer = Consumer(config, {topic: handler})
    async with consumer:
        await eventually(lambda: len(handled) == 2, within=60)
        tier = consumer._tiers[0]
        assert tier.rebalances == 1  # type: ignore[attr-defined]
    assert handled == [b"slow", b"next"]


async def test_rebalance_with_work_in_flight_loses_nothing(kafka_service: Any) -> None:
    """A second member joining mid-run takes partitions over; every message is handled."""
    topic = fresh()
    bootstrap = kafka_service.bootstrap_servers
    await create_topics(bootstrap, topic, partitions=4)
    await produce(bootstrap, topic, [(b"%d" % i, b"%d" % i, []) for i in range(400)])
    config = config_for(kafka_service, topics=[topic], ordering="none", max_in_flight=8)
    handled: list[bytes] = []

    async def handler(message: Message) -> None:
        await asyncio.sleep(0.01)
        assert message.value is not None
        handled.append(message.value)

    async with Consumer(config, {topic: handler}) as first:
        await eventually(lambda: len(handled) >= 40)
        async with Consumer(config, {topic: handler}):
            await eventually(lambda: len(set(handled)) == 400, within=120)
        assert first._tiers[0].rebalances >= 2  # type: ignore[attr-defined]
    assert set(handled) == {b"%d" % i for i in range(400)}


@pytest.mark.parametrize("ordering", ["key", "none"])
async def test_a_stuck_handler_holds_the_partition_at_max_run_ahead(
    kafka_service: Any, caplog: pytest.LogCaptureFixture, ordering: str
) -> None:
    """Other keys run on only ``max_run_ahead`` offsets past a handler that does not return."""
    topic = fresh()
    bootstrap = kafka_service.bootstrap_servers
    await create_topics(bootstrap, topic)
    records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]] = [
        (b"stuck", b"0", []),
        *((f"key-{i}".encode(), str(i).encode(), []) for i in range(1, 200)),
    ]
    await produce(bootstrap, topic, records)
    config = config_for(kafka_service, topics=[topic], ordering=ordering, max_run_ahead=20)
    release = asyncio.Event()
    handled: list[int] = []

    async def handler(message: Message) -> None:
        if message.key == b"stuck":
            await release.wait()
        handled.append(message.offset)

    async with Consumer(config, {topic: handler}):
        await eventually(lambda: "offset 0 is not done yet" in caplog.text)
        # The partition waits: nothing past the cap was taken while offset 0 runs.
        assert sorted(handled) == list(range(1, 20))
        release.set()
        await eventually(lambda: len(handled) == 200)
    assert sorted(handled) == list(range(200))
