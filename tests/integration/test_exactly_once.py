"""exactly_once on a broker: forwards and offsets commit together; aborted forwards stay unseen."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord

from kafka_retry import Consumer, KafkaRetryError, Message, SetupError

from .support import config_for, create_topics, eventually, fresh, produce

pytestmark = pytest.mark.integration

_COUNT = 40


def _needs_transactions(kafka_service: Any) -> None:
    if not kafka_service.supports_idempotence:
        pytest.skip("the broker hands out no producer ids, so no transactions")


async def _read_raw(bootstrap: str, topic: str, isolation_level: str) -> list[ConsumerRecord]:
    """Every record of ``topic`` up to its end (as ``isolation_level`` lets through)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        isolation_level=isolation_level,
    )
    await consumer.start()
    found: list[ConsumerRecord] = []
    try:
        await eventually(lambda: bool(consumer.assignment()))
        (tp,) = consumer.assignment()
        end = (await consumer.end_offsets([tp]))[tp]
        while await consumer.position(tp) < end:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                found.extend(records)
    finally:
        await consumer.stop()
    return found


def _origin(message: Message) -> int:
    assert message.provenance is not None
    return message.provenance.original_offset


async def test_a_fenced_instance_aborts_its_forwards_and_the_retry_tier_never_sees_them(
    kafka_service: Any,
) -> None:
    """A restart fences the instance before: its uncommitted forwards are aborted, never handled."""
    _needs_transactions(kafka_service)
    bootstrap = kafka_service.bootstrap_servers
    topic = fresh("eo")
    await create_topics(bootstrap, topic)
    await produce(bootstrap, topic, [(None, b"%d" % n, []) for n in range(_COUNT)])
    fields: dict[str, Any] = {
        "topics": [topic],
        "retry_intervals": [0.1],
        "exactly_once": True,
        "instance_id": fresh("instance"),
        "group": fresh("g"),
    }
    retry_topic = config_for(kafka_service, **fields).chain(topic).retries[0]
    seen: list[int] = []

    async def fail(message: Message) -> None:
        if message.attempt > 1:
            seen.append(_origin(message))
            return
        raise RuntimeError("first attempt fails")

    # The first instance forwards every record but commits nothing (a long
    # commit interval): it is the instance that dies before its commit.
    first = Consumer(config_for(kafka_service, commit_interval=3600, **fields), {topic: fail})
    first_run = asyncio.create_task(first.run())
    await first.wait_ready()
    uncommitted: list[ConsumerRecord] = []

    async def all_forwarded() -> None:
        while len(uncommitted) < _COUNT:
            uncommitted[:] = await _read_raw(bootstrap, retry_topic, "read_uncommitted")

    await asyncio.wait_for(all_forwarded(), 60)
    assert seen == []  # read_committed: nothing of the open transaction

    # The same instance again (same instance_id): it fences the first one.
    second = Consumer(config_for(kafka_service, **fields), {topic: fail})
    async with second:
        await eventually(lambda: len(seen) >= _COUNT, within=60)
        with pytest.raises(KafkaRetryError, match="transaction"):
            await asyncio.wait_for(first_run, 60)
    assert sorted(seen) == list(range(_COUNT))  # each failure handed on exactly once
    committed = await _read_raw(bootstrap, retry_topic, "read_committed")
    assert sorted(int(r.value) for r in committed) == list(range(_COUNT))
    raw = await _read_raw(bootstrap, retry_topic, "read_uncommitted")
    assert len(raw) == 2 * _COUNT  # the aborted forwards are on the log, unseen


async def test_successes_commit_through_the_transaction(kafka_service: Any) -> None:
    """With no failure at all, the done offsets still commit (in the tier's transaction)."""
    _needs_transactions(kafka_service)
    bootstrap = kafka_service.bootstrap_servers
    topic = fresh("eo")
    await create_topics(bootstrap, topic)
    await produce(bootstrap, topic, [(None, b"%d" % n, []) for n in range(_COUNT)])
    config = config_for(kafka_service, topics=[topic], retry_intervals=[1], exactly_once=True)
    handled: list[int] = []

    async def ok(message: Message) -> None:
        handled.append(message.offset)

    async with Consumer(config, {topic: ok}):
        await eventually(lambda: len(handled) == _COUNT)
    again: list[int] = []

    async def late(message: Message) -> None:
        again.append(message.offset)

    await produce(bootstrap, topic, [(None, b"end", [])])
    async with Consumer(config, {topic: late}):
        await eventually(lambda: bool(again))
    assert again == [_COUNT]  # the group resumed after the committed offsets


async def test_a_broker_without_transactions_is_a_setup_error(kafka_service: Any) -> None:
    """exactly_once on a broker with no transactions (Tansu) fails at start, naming the setting."""
    if kafka_service.supports_idempotence:
        pytest.skip("the broker has transactions (run with KAFKA_RETRY_TEST_BROKER=tansu)")
    topic = fresh("eo")
    await create_topics(kafka_service.bootstrap_servers, topic)
    config = config_for(
        kafka_service, topics=[topic], exactly_once=True, idempotence=True, connect_attempts=1
    )

    async def ok(message: Message) -> None:
        return None

    with pytest.raises(SetupError, match="exactly_once"):
        await asyncio.wait_for(Consumer(config, {topic: ok}).run(), 120)
