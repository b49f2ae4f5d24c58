"""MemoryConsumer and groups: prompt fetches, assignment, rebalances, offsets, pausing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, ConsumerStoppedError, IllegalStateError

from kafka_retry.testing import MemoryBroker, MemoryConsumer

TP0 = TopicPartition("t", 0)
TP1 = TopicPartition("t", 1)


class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Records the rebalance callbacks it gets."""

    def __init__(self) -> None:
        self.events: list[tuple[str, set[TopicPartition]]] = []

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.events.append(("revoked", set(revoked)))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.events.append(("assigned", set(assigned)))


async def member(
    broker: MemoryBroker, listener: Listener | None = None, reset: str = "earliest"
) -> MemoryConsumer:
    consumer = MemoryConsumer(broker, "g", client_id="c", auto_offset_reset=reset)
    await consumer.start()
    consumer.subscribe(["t"], listener=listener)
    return consumer


def broker_with(partitions: int = 1) -> MemoryBroker:
    broker = MemoryBroker()
    broker.create_topic("t", partitions)
    return broker


async def test_getmany_wakes_as_soon_as_a_record_arrives() -> None:
    """A fetch waiting 10 s returns within milliseconds of an append."""
    broker = broker_with()
    consumer = await member(broker)
    assert await consumer.getmany(timeout_ms=0) == {}
    started = time.perf_counter()
    fetch = asyncio.create_task(consumer.getmany(timeout_ms=10_000))
    await asyncio.sleep(0.001)
    broker.append("t", b"v")
    batch = await fetch
    assert time.perf_counter() - started < 0.5
    assert [r.value for r in batch[TP0]] == [b"v"]
    await consumer.stop()


async def test_getmany_returns_empty_at_its_timeout() -> None:
    """Nothing to fetch: an empty dict after timeout_ms."""
    consumer = await member(broker_with())
    started = time.perf_counter()
    assert await consumer.getmany(timeout_ms=30) == {}
    assert 0.02 < time.perf_counter() - started < 0.5


async def test_offset_reset_and_committed_offsets() -> None:
    """Without a commit: earliest or latest; with one: resume there."""
    broker = broker_with()
    for value in (b"0", b"1", b"2"):
        broker.append("t", value)
    latest = await member(broker, reset="latest")
    assert await latest.getmany(timeout_ms=0) == {}
    await latest.stop()
    earliest = await member(broker)
    batch = await earliest.getmany(timeout_ms=0)
    assert [r.offset for r in batch[TP0]] == [0, 1, 2]
    await earliest.commit({TP0: 2})
    await earliest.stop()
    assert broker.committed("g", "t") == 2
    again = await member(broker)
    batch = await again.getmany(timeout_ms=0)
    assert [r.value for r in batch[TP0]] == [b"2"]
    assert await again.committed(TP0) == 2


async def test_two_members_share_partitions_and_rebalance() -> None:
    """A second member takes half; when it leaves, the first gets everything back."""
    broker = broker_with(2)
    first_listener, second_listener = Listener(), Listener()
    first = await member(broker, first_listener)
    await first.getmany(timeout_ms=0)
    assert first.assignment() == {TP0, TP1}
    second = await member(broker, second_listener)
    polls = [asyncio.create_task(c.getmany(timeout_ms=100)) for c in (first, second)]
    await asyncio.gather(*polls)
    assert first.assignment() | second.assignment() == {TP0, TP1}
    assert len(first.assignment()) == len(second.assignment()) == 1
    assert first_listener.events == [
        ("revoked", set()),
        ("assigned", {TP0, TP1}),
        ("revoked", {TP0, TP1}),
        ("assigned", first.assignment()),
    ]
    await second.stop()
    await first.getmany(timeout_ms=0)
    assert first.assignment() == {TP0, TP1}


async def test_pause_resume_and_seek() -> None:
    """A paused partition is not fetched; resume wakes a fetch; seek re-reads."""
    broker = broker_with()
    consumer = await member(broker)
    await consumer.getmany(timeout_ms=0)
    consumer.pause(TP0)
    assert consumer.paused() == {TP0}
    broker.append("t", b"a")
    assert await consumer.getmany(timeout_ms=10) == {}
    assert consumer.pending_work() is None  # paused partitions wait for the clock
    fetch = asyncio.create_task(consumer.getmany(timeout_ms=10_000))
    await asyncio.sleep(0.001)
    consumer.resume(TP0)
    assert [r.value for r in (await asyncio.wait_for(fetch, 1))[TP0]] == [b"a"]
    consumer.seek(TP0, 0)
    assert await consumer.position(TP0) == 0
    assert consumer.highwater(TP0) == 1
    assert [r.value for r in (await consumer.getmany())[TP0]] == [b"a"]


async def test_misuse_is_refused_like_aiokafka() -> None:
    """Unassigned partitions, commits after losing them, fetching after stop."""
    broker = broker_with()
    consumer = await member(broker)
    await consumer.getmany(timeout_ms=0)
    other = TopicPartition("t", 5)
    with pytest.raises(IllegalStateError):
        consumer.pause(other)
    with pytest.raises(CommitFailedError):
        await consumer.commit({other: 1})
    await consumer.stop()
    await consumer.stop()
    with pytest.raises(ConsumerStoppedError):
        await consumer.getmany()


async def test_interrupt_ends_a_waiting_fetch() -> None:
    """interrupt() makes a long fetch return now, empty."""
    consumer = await member(broker_with())
    await consumer.getmany(timeout_ms=0)
    fetch = asyncio.create_task(consumer.getmany(timeout_ms=10_000))
    await asyncio.sleep(0.001)
    consumer.interrupt()
    assert await asyncio.wait_for(fetch, 1) == {}


async def test_pending_work_names_unfetched_records_and_rebalances() -> None:
    """pending_work() says what keeps the consumer busy, or None."""
    broker = broker_with()
    consumer = await member(broker)
    assert "rebalancing" in (consumer.pending_work() or "")
    await consumer.getmany(timeout_ms=0)
    assert consumer.pending_work() is None
    broker.append("t", b"v")
    assert "t[0] at 0 of 1" in (consumer.pending_work() or "")
    await consumer.getmany(timeout_ms=0)
    assert consumer.pending_work() is None


async def test_topic_created_later_is_assigned() -> None:
    """Subscribing before a topic exists: it is assigned once created."""
    broker = MemoryBroker()
    consumer = await member(broker)
    await consumer.getmany(timeout_ms=0)
    assert consumer.assignment() == set()
    broker.create_topic("t")
    broker.append("t", b"v")
    batch = await consumer.getmany(timeout_ms=0)
    assert [r.value for r in batch[TP0]] == [b"v"]
