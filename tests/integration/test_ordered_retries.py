"""Ordered retries (PostgreSQL backend) against a real broker and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from kafka_retry import Consumer, DatabaseConfig, Message
from kafka_retry.retry import _pg_schema
from kafka_retry.retry._pg_rows import insert_params
from kafka_retry.retry.postgres import apply_migrations
from kafka_retry.retry.table import INSERT_COLUMNS, topic_counts

from .support import eventually, produce
from .test_postgres_backend import new_topic, pg_config, row_failure, rows

pytestmark = pytest.mark.integration


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection[asyncpg.Record]]:
    """A connection for inspecting and arranging rows."""
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


@pytest.fixture
def database(database_url: str, db_schema: str) -> DatabaseConfig:
    """Database settings whose table lives in the test's fresh schema."""
    return DatabaseConfig.from_url(database_url, schema=db_schema)


def seen(calls: list[Message], key: bytes) -> list[tuple[bytes, int]]:
    """``(value, attempt)`` of every call for ``key``, in call order."""
    return [(m.value or b"", m.attempt) for m in calls if m.key == key]


async def eventually_rows(
    db: asyncpg.Connection[asyncpg.Record],
    database: DatabaseConfig,
    predicate: Callable[[list[asyncpg.Record]], bool],
) -> list[asyncpg.Record]:
    """Poll the table until ``predicate(rows)`` holds (30 s at most)."""
    found: list[asyncpg.Record] = []

    async def matched() -> bool:
        nonlocal found
        found = await rows(db, database)
        return bool(found) and predicate(found)

    for _ in range(600):
        if await matched():
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"table never matched; last rows: {found}")


@pytest.mark.parametrize("ordering", ["partition", "key"])
async def test_a_keys_later_messages_wait_behind_its_retry(
    kafka_service: Any,
    database: DatabaseConfig,
    db: asyncpg.Connection[asyncpg.Record],
    unique_name: Callable[[str], str],
    ordering: str,
) -> None:
    """k1 sends a, b, c (a fails once), k2 x, y: k1 is seen a(1), a(2), b, c; y before b."""
    topic = await new_topic(kafka_service, unique_name)
    records = [(b"k1", b"a"), (b"k1", b"b"), (b"k2", b"x"), (b"k1", b"c"), (b"k2", b"y")]
    await produce(kafka_service.bootstrap_servers, topic, [(k, v, []) for k, v in records])
    calls: list[Message] = []
    y_seen = asyncio.Event()

    async def handler(message: Message) -> None:
        calls.append(message)
        if message.value == b"y":
            y_seen.set()
        if message.value == b"a" and message.attempt == 1:
            raise RuntimeError("a fails once")
        if message.value == b"a":
            # The retry of a ends only after k2 flowed on: b, behind a, cannot come before y.
            await y_seen.wait()

    config = pg_config(kafka_service, database, topic, ordered_retries=True, ordering=ordering)
    async with Consumer(config, {topic: handler}):
        await eventually(lambda: len(calls) == 6)
        await eventually_rows(
            db, database, lambda found: all(r["state"] == "succeeded" for r in found)
        )
    assert seen(calls, b"k1") == [(b"a", 1), (b"a", 2), (b"b", 1), (b"c", 1)]
    assert seen(calls, b"k2") == [(b"x", 1), (b"y", 1)]
    values = [m.value for m in calls]
    assert values.index(b"y") < values.index(b"b")
    states = sorted((r["kafka_offset"], r["attempts"]) for r in await rows(db, database))
    assert states == [(0, 2), (1, 1), (3, 1)]  # a retried once; b and c waited, then ran once


async def test_the_order_holds_across_a_restart_while_b_waits(
    kafka_service: Any,
    database: DatabaseConfig,
    db: asyncpg.Connection[asyncpg.Record],
    unique_name: Callable[[str], str],
) -> None:
    """Stopped while b waits behind a's retry: the next consumer runs a(2), b, then c."""
    topic = await new_topic(kafka_service, unique_name)
    await produce(kafka_service.bootstrap_servers, topic, [(b"k1", b"a", []), (b"k1", b"b", [])])
    config = pg_config(kafka_service, database, topic, ordered_retries=True, retry_intervals=[600])
    first: list[Message] = []

    async def fail_a(message: Message) -> None:
        first.append(message)
        if message.value == b"a":
            raise RuntimeError("a fails")

    async with Consumer(config, {topic: fail_a}):
        await eventually_rows(
            db,
            database,
            lambda found: [r["state"] for r in found] == ["pending", "waiting"],
        )
    assert [m.value for m in first] == [b"a"]
    [status] = await topic_counts(db, database, config.group)
    assert (status.waiting, status.pending) == (1, {1: 1})
    # a's retry falls due now, and c comes while b still waits: the next consumer
    # learns k1 is held from the table, not from what it saw.
    await db.execute(
        f"UPDATE {database.qualified_table} SET due_at = now() WHERE state = 'pending'"
    )
    await produce(kafka_service.bootstrap_servers, topic, [(b"k1", b"c", [])])
    second: list[Message] = []

    async def record(message: Message) -> None:
        second.append(message)

    async with Consumer(config, {topic: record}):
        await eventually(lambda: len(second) == 3)
    assert [(m.value, m.attempt) for m in second] == [(b"a", 2), (b"b", 1), (b"c", 1)]


async def test_two_instances_never_run_two_rows_of_one_key_at_once(
    kafka_service: Any,
    database: DatabaseConfig,
    unique_name: Callable[[str], str],
) -> None:
    """Two consumers share the table: per key one call at a time, in offset order."""
    topic = await new_topic(kafka_service, unique_name, partitions=2)
    keys = [b"k%d" % n for n in range(6)]
    no_headers: list[tuple[str, bytes | None]] = []
    records = [(key, b"%d" % n, no_headers) for n in range(4) for key in keys]
    running: collections.Counter[bytes] = collections.Counter()
    overlaps: list[bytes] = []
    calls: list[Message] = []

    async def handler(message: Message) -> None:
        assert message.key is not None
        running[message.key] += 1
        if running[message.key] > 1:
            overlaps.append(message.key)
        calls.append(message)
        try:
            await asyncio.sleep(0.01)  # a handler doing I/O: calls overlap if they can
            if message.value == b"0" and message.attempt == 1:
                raise RuntimeError("the first message of each key fails once")
        finally:
            running[message.key] -= 1

    config = pg_config(kafka_service, database, topic, ordered_retries=True, ordering="key")
    async with Consumer(config, {topic: handler}), Consumer(config, {topic: handler}):
        await produce(kafka_service.bootstrap_servers, topic, records)
        await eventually(lambda: len(calls) == len(records) + len(keys), within=60)
    assert overlaps == []
    for key in keys:
        assert seen(calls, key) == [(b"0", 1), (b"0", 2), (b"1", 1), (b"2", 1), (b"3", 1)]


async def test_migration_0004_keeps_rows_of_an_existing_table(
    kafka_service: Any,
    database: DatabaseConfig,
    db: asyncpg.Connection[asyncpg.Record],
    unique_name: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A table made by 0001-0003 with a pending row upgrades in place; the row is retried."""
    shipped = _pg_schema.load_migrations()
    monkeypatch.setattr(_pg_schema, "load_migrations", lambda: shipped[:3])
    assert await apply_migrations(database) == [m.version for m in shipped[:3]]
    topic = await new_topic(kafka_service, unique_name)
    config = pg_config(kafka_service, database, topic, ordered_retries=True)
    old_columns = [c for c in INSERT_COLUMNS if c != "key_hash"]
    failure = row_failure(topic, config.group, 0, int(time.time() * 1000))
    params = insert_params(failure, "pending", failure.failed_at)[: len(old_columns)]
    placeholders = ", ".join(f"${n}" for n in range(1, len(old_columns) + 1))
    await db.execute(
        f"INSERT INTO {database.qualified_table} ({', '.join(old_columns)})"
        f" VALUES ({placeholders})",
        *params,
    )
    monkeypatch.setattr(_pg_schema, "load_migrations", lambda: shipped)
    calls: list[Message] = []

    async def record(message: Message) -> None:
        calls.append(message)

    async with Consumer(config, {topic: record}):  # applies 0004 on start
        await eventually(lambda: len(calls) == 1)
    [row] = await eventually_rows(db, database, lambda found: found[0]["state"] == "succeeded")
    assert (calls[0].value, calls[0].attempt, row["key_hash"]) == (b"v0", 2, None)
