"""The PostgreSQL retry backend against a real broker and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import attrs
import pytest

from kafka_retry import (
    Config,
    Consumer,
    ConsumerState,
    DatabaseConfig,
    Message,
    NonRetryableError,
    ServiceUnavailableError,
)
from kafka_retry._clock import SystemClock
from kafka_retry.retry._pg_rows import Statements, insert_params
from kafka_retry.retry.base import Failure
from kafka_retry.retry.postgres import apply_migrations, counts, dead_lettered_count

from .support import config_for, create_topics, eventually, produce
from .tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

ODD_KEY = b"\x00\xffkey"
ODD_VALUE = b"\xff\xfe\x00{not json\x80 \xc3\x28"
Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]
DUP_HEADERS: list[tuple[str, bytes | None]] = [
    ("trace", b"1"),
    ("trace", b"\x00\xff"),
    ("empty", b""),
    ("null", None),
]


class Recorder:
    """A handler that records every call and fails as ``fail(message)`` says."""

    def __init__(self, fail: Callable[[Message], BaseException | None] | None = None) -> None:
        self.calls: list[Message] = []
        self.times: list[float] = []
        self._fail = fail

    async def __call__(self, message: Message) -> None:
        self.calls.append(message)
        self.times.append(time.time())
        if self._fail is not None:
            error = self._fail(message)
            if error is not None:
                raise error


def fails_first(message: Message) -> BaseException | None:
    """Fail attempt 1 only."""
    return ValueError(f"first attempt of {message.offset}") if message.attempt == 1 else None


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


def pg_config(kafka: Any, database: DatabaseConfig, topic: str, **fields: Any) -> Config:
    """A postgres-backend Config for one topic; joins the group quickly."""
    fields.setdefault("retry_intervals", [0.2])
    fields.setdefault("session_timeout_ms", 6000)
    return config_for(kafka, topics=[topic], retry_backend="postgres", database=database, **fields)


async def new_topic(kafka: Any, unique_name: Callable[[str], str], partitions: int = 1) -> str:
    """A fresh main topic on the broker."""
    topic = unique_name("pg")
    await create_topics(kafka.bootstrap_servers, topic, partitions=partitions)
    return topic


async def rows(
    db: asyncpg.Connection[asyncpg.Record], database: DatabaseConfig
) -> list[asyncpg.Record]:
    """Every row of the retry table, by id."""
    return await db.fetch(f"SELECT * FROM {database.qualified_table} ORDER BY id")


def row_failure(topic: str, group: str, offset: int, failed_at: int) -> Failure:
    """A first-attempt failure, as the main tier would store it."""
    message = Message(
        topic=topic,
        partition=0,
        offset=offset,
        key=b"k%d" % offset,
        value=b"v%d" % offset,
        headers=(),
        timestamp=failed_at,
        main_topic=topic,
    )
    return Failure(message, "ValueError", "boom", failed_at, group, final=False)


async def insert_row(
    db: asyncpg.Connection[asyncpg.Record],
    database: DatabaseConfig,
    failure: Failure,
    state: str = "pending",
    due_ms: int | None = None,
) -> int:
    """Insert a row for ``failure`` directly; return its id."""
    sql = Statements.of(database).insert + " RETURNING id"
    params = insert_params(failure, state, failure.failed_at if due_ms is None else due_ms)
    row_id: int = await db.fetchval(sql, *params)
    return row_id


async def eventually_rows(
    db: asyncpg.Connection[asyncpg.Record],
    database: DatabaseConfig,
    predicate: Callable[[list[asyncpg.Record]], bool],
    within: float = 30,
) -> list[asyncpg.Record]:
    """Poll the table until ``predicate(rows)`` holds; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        found = await rows(db, database)
        if found and predicate(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"table never matched; last rows: {found}")
        await asyncio.sleep(0.05)


async def test_fails_once_then_succeeds(
    kafka_service: Any,
    database: DatabaseConfig,
    db: asyncpg.Connection[asyncpg.Record],
    unique_name: Callable[[str], str],
) -> None:
    """A message failing once is retried from the table as attempt 2; its row ends succeeded."""
    topic = await new_topic(kafka_service, unique_name)
    await produce(kafka_service.bootstrap_servers, topic, [(b"k", b"v", [])])
    config = pg_config(kafka_service, database, topic)
    handler = Recorder(fails_first)
    async with Consumer(config, {topic: handler}):
        await eventually(lambda: len(handler.calls) == 2)
        await eventually_rows(db, database, lambda found: found[0]["state"] == "succeeded")
    first, retry = handler.calls
    assert (retry.attempt, retry.main_topic, retry.offset) == (2, topic, first.offset)
    assert retry.provenance is not None
    assert retry.provenance.error_message == f"first attempt of {first.offset}"
    assert handler.times[1] * 1000 >= retry.provenance.due_at  # never early
    [row] = await rows(db, database)
    assert (row["state"], row["attempts"], row["claimed_by"]) == ("succeeded", 2, None)


async def test_always_failing_is_dead_lettered_after_the_last_interval(
    kafka_service: Any,
    database: DatabaseConfig,
    db: asyncpg.Connection[asyncpg.Record],
    unique_name: Callable[[str], str],
) -> None:
    """With two intervals the handler runs three times, then the row is dead-lettered."""
    topic = await new_topic(kafka_service, unique_name)
    await produce(kafka_service.bootstrap_servers, topic, [(b"k", b"v", [])])
    config = pg_config(kafka_service, database, topic, retry_intervals=[0.2, 0.2])
    handler = Recorder(lambda m: RuntimeError(f"attempt {m.attempt} failed"))
    async with Consumer(config, {topic: handler}):
        found = await eventually_rows(
            db, database, lambda found: found[0]["state"] == "dead_lettered"
        )
    assert [m.attempt for m in handler.calls] == [1, 2, 3]
    [row] = found
    assert row["attempts"] == 3
    assert (row["last_error_type"], row["last_error"]) == ("RuntimeError", "attempt 3 failed")
    assert await dead_lettered_count(db, database, config.group) == 1


async def test_non_retryable_error_is_dead_lettered_at_once(
    kafka_service: Any,
    database: DatabaseConfig,
    db: asyncpg.Connection[asyncpg.Record],
    unique_name: Callable[[str], str],
) -> None:
    """NonRetryableError on the main tier stores the row dead-lettered after one call."""
    topic = await new_topic(kafka_service, unique_name)
    await produce(kafka_service.bootstrap_servers, topic, [(b"k", b"v", [])])
    config = pg_config(kafka_service, database, topic, retry_intervals=[0.2, 0.2])
    handler = Recorder(lambda m: NonRetryableError("bad payload"))
    async with Consumer(config, {topic: handler}):
        found = await eventually_rows(db, database, lambda found: len(found) == 1)
    assert len(handler.calls) == 1
    [row] = found
    assert (row["state"], row["attempts"]) == ("dead_lettered", 1)
    assert row["last_error_type"] == "kafka_retry.NonRetryableError"
    summary = await counts(db, database, config.group)
    assert (summary.dead_lettered, summary.total_pending, summary.succeeded) == (1, 0, 0)


async def test_payload_and_headers_round_trip_byte_exact(
    kafka_service: Any,
    database: DatabaseConfig,
    db: asyncpg.Connection[asyncpg.Record],
    unique_name: Callable[[str], str],
) -> None:
    """Non-UTF-8 bytes, duplicate/empty/null headers, null and empty payloads arrive as-is."""
    topic = await new_topic(kafka_service, unique_name)
    records: list[Record] = [
        (ODD_KEY, ODD_VALUE, DUP_HEADERS),
        (None, b"", []),
        (b"", None, [("n", None)]),
    ]
    await produce(kafka_service.bootstrap_servers, topic, records, partition=0)
    config = pg_config(kafka_service, database, topic)
    handler = Recorder(fails_first)
    async with Consumer(config, {topic: handler}):
        await eventually(lambda: len(handler.calls) == 6)
    first = {m.offset: m for m in handler.calls if m.attempt == 1}
    for retry in (m for m in handler.calls if m.attempt == 2):
        original = first[retry.offset]
        assert (retry.key, retry.value, retry.headers) == (
            original.key,
            original.value,
            original.headers,
        )
        assert retry.timestamp == original.timestamp
        assert (retry.topic, retry.partition) == (original.topic, original.partition)
    by_offset = {m.offset: m for m in handler.calls if m.attempt == 2}
    assert by_offset[0].headers == tuple(DUP_HEADERS)
    assert (by_offset[0].key, by_offset[0].value) == (ODD_KEY, ODD_VALUE)
    assert (by_offset[1].key, by_offset[1].value, by_offset[1].headers) == (None, b"", ())
    assert (by_offset[2].key, by_offset[2].value) == (b"", None)
    assert by_offset[2].headers == (("n", None),)


async def test_expired_lease_of_a_dead_worker_is_claimed_again(
    kafka_service: Any,
    database: DatabaseConfig,
    db: asyncpg.Connection[asyncpg.Record],
    unique_name: Callable[[str], str],
) -> None:
    """Rows leased by a vanished worker are retried once the lease ends, not before."""
    topic = await new_topic(kafka_service, unique_name)
    config = pg_config(kafka_service, database, topic)
    await apply_migrations(database)
    now_ms = int(time.time() * 1000)
    expired = await insert_row(db, database, row_failure(topic, config.group, 1, now_ms - 5000))
    expiring = await insert_row(db, database, row_failure(topic, config.group, 2, now_ms - 5000))
    held = await insert_row(db, database, row_failure(topic, config.group, 3, now_ms - 5000))
    lease = {
        expired: dt.datetime.now(dt.UTC) - dt.timedelta(seconds=10),
        expiring: dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1),
        held: dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
    }
    for row_id, until in lease.items():
        await db.execute(
            f"UPDATE {database.qualified_table} SET claimed_by = 'gone:1:dead',"
            " claimed_until = $2 WHERE id = $1",
            row_id,
            until,
        )
    handler = Recorder()
    async with Consumer(config, {topic: handler}):
        await eventually(lambda: len(handler.calls) == 2)
        found = await eventually_rows(
            db, database, lambda found: sum(r["state"] == "succeeded" for r in found) == 2
        )
    handled_at = {m.offset: t for m, t in zip(handler.calls, handler.times, strict=True)}
    assert sorted(handled_at) == [1, 2]
    assert handled_at[2] >= lease[expiring].timestamp()
    state = {r["id"]: (r["state"], r["claimed_by"]) for r in found}
    assert state[held] == ("pending", "gone:1:dead")


async def test_two_consumers_handle_every_retry_exactly_once(
    kafka_service: Any,
    database: DatabaseConfig,
    db: asyncpg.Connection[asyncpg.Record],
    unique_name: Callable[[str], str],
) -> None:
    """Two consumers of one group share 1,000 retries on 4 partitions; none is run twice."""
    topic = await new_topic(kafka_service, unique_name, partitions=4)
    config = pg_config(kafka_service, database, topic, retry_batch_size=50)
    retries: collections.Counter[tuple[int, int]] = collections.Counter()
    by_consumer: collections.Counter[str] = collections.Counter()
    started = {"a": asyncio.Event(), "b": asyncio.Event()}

    def handler(name: str, other: str) -> Callable[[Message], Any]:
        async def handle(message: Message) -> None:
            if message.attempt == 1:
                raise ValueError("first attempt fails")
            retries[message.partition, message.offset] += 1
            by_consumer[name] += 1
            started[name].set()
            # Hold this consumer's first batch until the other one claims rows
            # too, so that both really compete (bounded: a lone poller is a failure).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(started[other].wait(), 20)

        return handle

    async with (
        Consumer(config, {topic: handler("a", "b")}),
        Consumer(config, {topic: handler("b", "a")}),
    ):
        records: list[Record] = [(b"%d" % n, b"v%d" % n, []) for n in range(1000)]
        await produce(kafka_service.bootstrap_servers, topic, records)
        await eventually(lambda: sum(retries.values()) >= 1000, within=90)
        found = await eventually_rows(
            db,
            database,
            lambda found: len(found) >= 1000 and all(r["state"] == "succeeded" for r in found),
            within=60,
        )
    # A main-tier redelivery (rebalance) may store a message twice; each row still runs once.
    stored = collections.Counter((r["kafka_partition"], r["kafka_offset"]) for r in found)
    assert len(stored) == 1000
    assert retries == stored
    assert all(r["attempts"] == 2 for r in found)
    assert set(by_consumer) == {"a", "b"}  # both pollers competed for the rows


async def test_maintenance_deletes_only_old_succeeded_rows(
    kafka_service: Any,
    database: DatabaseConfig,
    db: asyncpg.Connection[asyncpg.Record],
    unique_name: Callable[[str], str],
) -> None:
    """Maintenance removes succeeded rows idle for over an hour; pending and dead stay."""
    topic = await new_topic(kafka_service, unique_name)
    config = pg_config(kafka_service, database, topic, maintenance_interval=0.1)
    await apply_migrations(database)
    now_ms = int(time.time() * 1000)
    later = now_ms + 3_600_000  # pending rows must not be claimed meanwhile
    ids = {
        name: await insert_row(
            db, database, row_failure(topic, config.group, n, now_ms), state, due_ms=later
        )
        for n, (name, state) in enumerate(
            [
                ("old_succeeded", "succeeded"),
                ("new_succeeded", "succeeded"),
                ("old_pending", "pending"),
                ("old_dead", "dead_lettered"),
            ]
        )
    }
    other_group = row_failure(topic, "another-group", 9, now_ms)
    ids["other_group"] = await insert_row(db, database, other_group, "succeeded")
    await db.execute(
        f"UPDATE {database.qualified_table} SET updated_at = now() - interval '2 hours'"
        " WHERE id = ANY($1::bigint[])",
        [ids["old_succeeded"], ids["old_pending"], ids["old_dead"], ids["other_group"]],
    )
    async with Consumer(config, {topic: Recorder()}):
        found = await eventually_rows(
            db, database, lambda found: ids["old_succeeded"] not in {r["id"] for r in found}
        )
    kept = ("new_succeeded", "old_pending", "old_dead", "other_group")
    assert {r["id"] for r in found} == {ids[name] for name in kept}


async def test_concurrent_migrations_apply_once(
    database: DatabaseConfig, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    """Three instances migrating at once apply each version exactly once."""
    results = await asyncio.gather(*(apply_migrations(database) for _ in range(3)))
    versions = ["0001_create_table", "0002_replayed_state", "0003_last_span", "0004_ordered_keys"]
    assert sorted(results) == [[], [], versions]
    ledger = await db.fetch(
        f'SELECT table_name, version FROM "{database.schema}".kafka_retry_migrations'
        " ORDER BY version"
    )
    assert [tuple(r) for r in ledger] == [(database.table, v) for v in versions]
    assert await apply_migrations(database) == []


def closed_port() -> int:
    """A local TCP port that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_unreachable_database_at_start_raises_service_unavailable(
    kafka_service: Any, unique_name: Callable[[str], str]
) -> None:
    """A database that never answers fails the start with its address, not the password."""
    topic = await new_topic(kafka_service, unique_name)
    port = closed_port()
    database = DatabaseConfig(host="127.0.0.1", port=port, password="s3cret-pw")
    config = pg_config(kafka_service, database, topic, connect_attempts=2, connect_interval=0.05)
    with pytest.raises(ServiceUnavailableError) as caught:
        async with Consumer(config, {topic: Recorder()}):
            pass
    assert caught.value.address == f"127.0.0.1:{port}"
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert "s3cret-pw" not in str(caught.value)
    with pytest.raises(ServiceUnavailableError, match=f"127.0.0.1:{port}"):
        await apply_migrations(database, connect_attempts=2, connect_interval=0.05)


async def test_stop_releases_the_lease_of_an_unfinished_retry(
    kafka_service: Any,
    database: DatabaseConfig,
    db: asyncpg.Connection[asyncpg.Record],
    unique_name: Callable[[str], str],
) -> None:
    """A retry still running at the drain timeout is cancelled and its row handed back."""
    topic = await new_topic(kafka_service, unique_name)
    config = pg_config(kafka_service, database, topic, drain_timeout=0.2)
    await apply_migrations(database)
    row_id = await insert_row(db, database, row_failure(topic, config.group, 1, 0))
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def stuck(message: Message) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with Consumer(config, {topic: stuck}):
        await asyncio.wait_for(started.wait(), 30)
    assert cancelled.is_set()
    row = await db.fetchrow(f"SELECT * FROM {database.qualified_table} WHERE id = $1", row_id)
    assert row is not None
    assert (row["state"], row["attempts"], row["claimed_by"], row["claimed_until"]) == (
        "pending",
        1,
        None,
        None,
    )


async def test_database_outage_mid_run_is_survived(
    kafka_service: Any,
    database: DatabaseConfig,
    db: asyncpg.Connection[asyncpg.Record],
    unique_name: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With PostgreSQL gone for a while, failures wait for it and pollers recover by themselves."""
    proxy = TcpProxy(database.host, database.port)
    await proxy.start()
    via_proxy = attrs.evolve(database, host="127.0.0.1", port=proxy.port)
    topic = await new_topic(kafka_service, unique_name)
    config = pg_config(kafka_service, via_proxy, topic)
    handler = Recorder(fails_first)
    caplog.set_level(logging.WARNING, logger="kafka_retry")

    def logged(text: str) -> bool:
        return any(text in record.getMessage() for record in caplog.records)

    try:
        async with Consumer(config, {topic: handler}):
            await produce(kafka_service.bootstrap_servers, topic, [(b"a", b"before", [])])
            await eventually_rows(db, database, lambda found: found[0]["state"] == "succeeded")
            await proxy.cut()
            await produce(kafka_service.bootstrap_servers, topic, [(b"b", b"during", [])])
            await eventually(lambda: logged("storing the failure") and logged("database error"))
            await proxy.restore()
            await eventually(lambda: [m.value for m in handler.calls].count(b"during") == 2)
            found = await eventually_rows(
                db, database, lambda found: all(r["state"] == "succeeded" for r in found)
            )
    finally:
        await proxy.close()
    assert [r["message_value"] for r in found] == [b"before", b"during"]


async def test_lease_is_renewed_while_a_slow_retry_runs(
    kafka_service: Any,
    database: DatabaseConfig,
    db: asyncpg.Connection[asyncpg.Record],
    unique_name: Callable[[str], str],
) -> None:
    """A retry running longer than its lease keeps the row leased, so it runs only once."""
    topic = await new_topic(kafka_service, unique_name)
    config = pg_config(kafka_service, database, topic, retry_lease=0.6)
    await apply_migrations(database)
    row_id = await insert_row(db, database, row_failure(topic, config.group, 1, 0))
    query = f"SELECT claimed_until FROM {database.qualified_table} WHERE id = $1"
    release = asyncio.Event()
    handler_calls = 0

    async def slow(message: Message) -> None:
        nonlocal handler_calls
        handler_calls += 1
        await release.wait()

    async with Consumer(config, {topic: slow}), Consumer(config, {topic: slow}):
        await eventually(lambda: handler_calls == 1)
        first_lease = await db.fetchval(query, row_id)
        renewed: list[dt.datetime] = []

        async def lease_moved() -> None:
            deadline = time.monotonic() + 30
            while not renewed:
                lease = await db.fetchval(query, row_id)
                if lease is not None and lease > first_lease + dt.timedelta(seconds=1):
                    renewed.append(lease)
                assert time.monotonic() < deadline, "the lease was never renewed"
                await asyncio.sleep(0.05)

        await lease_moved()  # outlived the first lease by over a second
        release.set()
        await eventually_rows(db, database, lambda found: found[0]["state"] == "succeeded")
    assert handler_calls == 1


async def lease_outcome(
    db: asyncpg.Connection[asyncpg.Record], database: DatabaseConfig, row_id: int
) -> str:
    """Wait until row ``row_id`` is recorded or its lease runs out (database time); say which."""
    query = (
        f"SELECT state, claimed_until <= now() AS lapsed FROM {database.qualified_table}"
        " WHERE id = $1"
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = await db.fetchrow(query, row_id)
        assert row is not None
        if row["state"] != "pending":
            return str(row["state"])
        if row["lapsed"]:
            return "lease lapsed"
        await asyncio.sleep(0.05)
    raise AssertionError(f"row {row_id} neither recorded nor released")


async def test_a_finished_retry_is_recorded_while_its_batch_runs_on(
    kafka_service: Any,
    database: DatabaseConfig,
    db: asyncpg.Connection[asyncpg.Record],
    unique_name: Callable[[str], str],
) -> None:
    """A row that finished is written at once, not when its batch ends: no lease lapses on it."""
    topic = await new_topic(kafka_service, unique_name)
    config = pg_config(kafka_service, database, topic, retry_lease=1.0)
    await apply_migrations(database)
    first = await insert_row(db, database, row_failure(topic, config.group, 1, 0))
    await insert_row(db, database, row_failure(topic, config.group, 2, 0))
    release = asyncio.Event()
    calls: list[int] = []

    async def second_is_slow(message: Message) -> None:
        calls.append(message.offset)
        if message.offset == 2:
            await release.wait()

    async with Consumer(config, {topic: second_is_slow}):
        await eventually(lambda: calls == [1, 2])
        try:
            assert await lease_outcome(db, database, first) == "succeeded"
        finally:
            release.set()
        await eventually_rows(db, database, lambda found: found[1]["state"] == "succeeded")
    assert calls == [1, 2]


async def test_a_clean_stop_starts_no_further_row_of_its_batch(
    kafka_service: Any,
    database: DatabaseConfig,
    db: asyncpg.Connection[asyncpg.Record],
    unique_name: Callable[[str], str],
) -> None:
    """After stop() the running retry finishes and is recorded; the batch's other rows go back."""
    topic = await new_topic(kafka_service, unique_name)
    config = pg_config(kafka_service, database, topic)
    await apply_migrations(database)
    for offset in (1, 2, 3):
        await insert_row(db, database, row_failure(topic, config.group, offset, 0))
    release = asyncio.Event()
    calls: list[int] = []

    async def first_waits(message: Message) -> None:
        calls.append(message.offset)
        if message.offset == 1:
            await release.wait()

    consumer = Consumer(config, {topic: first_waits})
    async with consumer:
        await eventually(lambda: calls == [1])
        stopping = asyncio.create_task(consumer.stop())
        await eventually(lambda: consumer.state is ConsumerState.STOPPING)
        release.set()
        await stopping
    assert calls == [1]
    found = await rows(db, database)
    assert [(r["state"], r["attempts"], r["claimed_by"]) for r in found] == [
        ("succeeded", 2, None),
        ("pending", 1, None),
        ("pending", 1, None),
    ]


class FastClock(SystemClock):
    """This machine's clock, an hour fast."""

    def time(self) -> float:
        return super().time() + 3600


async def test_a_fast_clock_neither_retries_early_nor_takes_over_leases(
    kafka_service: Any,
    database: DatabaseConfig,
    db: asyncpg.Connection[asyncpg.Record],
    unique_name: Callable[[str], str],
) -> None:
    """Due times and leases are compared with the database's now(), not the instance's clock."""
    topic = await new_topic(kafka_service, unique_name)
    config = pg_config(kafka_service, database, topic)
    await apply_migrations(database)
    table = database.qualified_table
    await insert_row(db, database, row_failure(topic, config.group, 1, 0))
    not_due = await insert_row(db, database, row_failure(topic, config.group, 2, 0))
    await db.execute(
        f"UPDATE {table} SET due_at = now() + interval '30 minutes' WHERE id = $1", not_due
    )
    leased = await insert_row(db, database, row_failure(topic, config.group, 3, 0))
    await db.execute(
        f"UPDATE {table} SET claimed_by = 'other', claimed_until = now() + interval '30 minutes'"
        " WHERE id = $1",
        leased,
    )
    handler = Recorder()
    async with Consumer(config, {topic: handler}, clock=FastClock()):
        # The claim that takes the due row would take the other two with it.
        await eventually_rows(db, database, lambda found: found[0]["state"] == "succeeded")
    assert [message.offset for message in handler.calls] == [1]
    found = await rows(db, database)
    assert [(r["state"], r["claimed_by"]) for r in found] == [
        ("succeeded", None),
        ("pending", None),
        ("pending", "other"),
    ]
