"""Batch handlers against a real broker (and PostgreSQL): only the failed messages move on."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from kafka_retry import BatchFailed, Consumer, DatabaseConfig, Message, NonRetryableError

from .support import config_for, create_topics, eventually, produce, read_all

pytestmark = pytest.mark.integration

RECORDS = 60
PARTITIONS = 2


def number(message: Message) -> int:
    """The record's number, from its value."""
    assert message.value is not None
    return int(message.value)


class Recorder:
    """A batch handler that fails numbers ``% 7 == 3`` on their first attempt (21: for good)."""

    def __init__(self) -> None:
        self.batches: list[list[Message]] = []

    async def __call__(self, messages: list[Message]) -> None:
        self.batches.append(messages)
        failed: dict[Message, BaseException] = {}
        for message in messages:
            n = number(message)
            if message.attempt == 1 and n % 7 == 3:
                failed[message] = NonRetryableError("gone") if n == 24 else OSError(f"no {n}")
        if failed:
            raise BatchFailed(failed)

    def handled(self) -> list[Message]:
        return [m for batch in self.batches for m in batch]


FAILING = [n for n in range(RECORDS) if n % 7 == 3]
RETRIED = [n for n in FAILING if n != 24]


async def fill(bootstrap: str, topic: str) -> None:
    """``RECORDS`` records, numbered in their values, spread over the partitions."""
    await create_topics(bootstrap, topic, partitions=PARTITIONS)
    for partition in range(PARTITIONS):
        values = [b"%d" % n for n in range(RECORDS) if n % PARTITIONS == partition]
        await produce(bootstrap, topic, [(None, v, []) for v in values], partition=partition)


def check_batches(recorder: Recorder) -> None:
    """Each batch holds one partition's records, in offset order, at most max_size of them."""
    for batch in recorder.batches:
        assert len(batch) <= 10
        assert len({(m.topic, m.partition) for m in batch}) == 1
        assert [m.offset for m in batch] == sorted(m.offset for m in batch)


async def test_batch_failed_retries_exactly_the_failed_messages(
    kafka_service: Any, unique_name: Callable[[str], str]
) -> None:
    """Named messages go to retry1 (or the dead letter); every other one is handled exactly once."""
    topic = unique_name("events")
    bootstrap = kafka_service.bootstrap_servers
    await fill(bootstrap, topic)
    config = config_for(kafka_service, topics=[topic], retry_intervals=[0.5])
    chain = config.topic_chain(topic)
    recorder = Recorder()
    consumer = Consumer(config)
    consumer.batch_handler(topic, max_size=10, max_wait=0.05)(recorder)
    async with consumer:
        await eventually(lambda: len(recorder.handled()) == RECORDS + len(RETRIED))
        dead = await read_all(bootstrap, chain[-1], 1)
    retried = await read_all(bootstrap, chain[1], len(RETRIED))
    counts = Counter((number(m), m.attempt) for m in recorder.handled())
    assert counts == Counter({(n, 1): 1 for n in range(RECORDS)} | {(n, 2): 1 for n in RETRIED})
    assert sorted(int(r.value) for r in retried) == RETRIED
    assert {dict(r.headers)["kafka-retry-error-type"] for r in retried} == {b"OSError"}
    assert [(r.value, dict(r.headers)["kafka-retry-error-message"]) for r in dead] == [
        (b"24", b"gone")
    ]
    check_batches(recorder)


async def test_postgres_retries_reach_the_batch_handler_as_a_claimed_batch(
    kafka_service: Any,
    database_url: str,
    db_schema: str,
    unique_name: Callable[[str], str],
) -> None:
    """With the PostgreSQL backend the failed messages come back in batches, at attempt 2."""
    topic = unique_name("events")
    bootstrap = kafka_service.bootstrap_servers
    await fill(bootstrap, topic)
    config = config_for(
        kafka_service,
        topics=[topic],
        retry_intervals=[0.2],
        retry_backend="postgres",
        database=DatabaseConfig.from_url(database_url, schema=db_schema),
    )
    recorder = Recorder()
    consumer = Consumer(config)
    consumer.batch_handler(topic, max_size=10, max_wait=0.05)(recorder)
    async with consumer:
        await eventually(lambda: len(recorder.handled()) == RECORDS + len(RETRIED))
    counts = Counter((number(m), m.attempt) for m in recorder.handled())
    assert counts == Counter({(n, 1): 1 for n in range(RECORDS)} | {(n, 2): 1 for n in RETRIED})
    retries = [batch for batch in recorder.batches if batch[0].attempt == 2]
    assert all(m.attempt == 2 and m.main_topic == topic for b in retries for m in b)
    check_batches(recorder)
