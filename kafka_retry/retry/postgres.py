"""The PostgreSQL retry backend: failures wait in a table, retry tiers poll it.

With ``Config(retry_backend="postgres", database=DatabaseConfig(...))`` a
failure on the main tier is inserted as a row (``attempts = 1``, due after the
first interval) before its offset counts as done. Retry tier ``k`` is a
:class:`~kafka_retry.retry._pg_poller.TablePoller` that claims due rows with
``attempts = k``; a final failure is kept as a ``dead_lettered`` row. A
maintenance task deletes succeeded rows after an hour.

The table (created by the versioned migrations in ``migrations/``)::

    id bigserial PK          consumer_group text      main_topic text
    kafka_partition int      kafka_offset bigint      message_timestamp bigint (ms)
    message_key bytea        message_value bytea      (NULL for a null key/value)
    header_names bytea[]     header_values bytea[]    (parallel, in record order)
    attempts int             state text: pending | succeeded | dead_lettered
    due_at timestamptz       failed_at timestamptz
    claimed_until timestamptz  claimed_by text        (the lease)
    last_error_type text     last_error text
    created_at timestamptz   updated_at timestamptz

``attempts`` counts the attempts made: a pending row with ``attempts = k``
waits for tier ``k`` (whose handler sees ``message.attempt == k + 1``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Iterable, Mapping
from typing import TypeAlias

import asyncpg
import attrs

from kafka_retry._clock import Clock
from kafka_retry._observe import NullObserver, Observer
from kafka_retry.config import Config, DatabaseConfig
from kafka_retry.errors import ConfigError
from kafka_retry.retry._pg_connect import (
    TRANSIENT,
    Backoff,
    Executor,
    close_pool,
    connect,
    open_pool,
)
from kafka_retry.retry._pg_maintenance import MaintenanceTier, delete_succeeded
from kafka_retry.retry._pg_poller import TablePoller
from kafka_retry.retry._pg_rows import (
    DEAD_LETTERED,
    PENDING,
    SUCCEEDED,
    Statements,
    insert_params,
)
from kafka_retry.retry._pg_schema import migrate, template_names
from kafka_retry.retry._pg_table import PgRows, RetryRows
from kafka_retry.retry.base import DeadLetterSink, Failure, RetryBackend
from kafka_retry.runtime.dispatch import Dispatcher, Handler
from kafka_retry.runtime.tier import Tier

__all__ = [
    "Executor",
    "PostgresBackend",
    "PostgresStore",
    "RetryCounts",
    "RetryRows",
    "apply_migrations",
    "counts",
    "dead_lettered_count",
    "delete_succeeded",
    "open_postgres_backend",
    "table_backend",
]

log = logging.getLogger("kafka_retry")

Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"

# Pollers and maintenance hold one connection at a time; the rest serve the
# main tier's inserts, which run concurrently per partition.
_POOL_BASE = 8


class PostgresStore:
    """Inserts failures of the main tier as rows: pending for retry, or dead-lettered.

    Serves as the :class:`~kafka_retry.retry.base.RetryBackend` and the
    :class:`~kafka_retry.retry.base.DeadLetterSink` of the postgres backend.
    An insert that fails is retried with capped exponential backoff until it is
    committed or the caller is cancelled; the offset is not done before then.

    Args:
        rows: The retry table.
        config: The consumer's settings.
        clock: Time source for backoff sleeps.
        observer: Told about every failed insert.
    """

    def __init__(
        self, rows: RetryRows, config: Config, clock: Clock, observer: Observer | None = None
    ) -> None:
        self._rows = rows
        self._intervals = config.retry_intervals
        self._clock = clock
        self._observer: Observer = observer or NullObserver()

    async def schedule(self, failure: Failure) -> None:
        """Insert a pending row with ``attempts = failure.attempts``, due after its interval."""
        delay = self._intervals[failure.attempts - 1]
        await self._insert(failure, PENDING, failure.failed_at + round(delay * 1000))

    async def dead_letter(self, failure: Failure) -> None:
        """Insert a dead-lettered row."""
        await self._insert(failure, DEAD_LETTERED, failure.failed_at)

    async def _insert(self, failure: Failure, state: str, due_ms: int) -> None:
        params = insert_params(failure, state, due_ms)
        backoff = Backoff()
        while True:
            try:
                await self._rows.insert(params)
                return
            except TRANSIENT as exc:
                self._observer.forward_failed(self._rows.where, type(exc).__name__)
                delay = backoff.delay()
                message = failure.message
                log.warning(
                    "storing the failure of %s[%d]@%d failed (%s: %s); retrying in %.1fs",
                    message.topic,
                    message.partition,
                    message.offset,
                    type(exc).__name__,
                    exc,
                    delay,
                    extra={"topic": message.topic, "error_type": type(exc).__name__},
                )
                await self._clock.sleep(delay)


@attrs.frozen
class PostgresBackend:
    """What the consumer runs with the postgres backend.

    Attributes:
        retry: Takes retryable failures of the main tier.
        dead_letters: Takes final failures of the main tier.
        tiers: One poller per retry interval, then the maintenance task (if any).
        pool: The connection pool (closed by the consumer's exit stack); None
            for a table that is not in PostgreSQL.
        worker_id: What this instance writes to ``claimed_by``.
    """

    retry: RetryBackend
    dead_letters: DeadLetterSink
    tiers: list[Tier]
    pool: Pool | None
    worker_id: str


def new_worker_id() -> str:
    """``host:pid:random``: unique per backend instance, readable in ``claimed_by``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


async def open_postgres_backend(
    config: Config,
    handlers: Mapping[str, Handler],
    clock: Clock,
    stack: contextlib.AsyncExitStack,
    observer: Observer | None = None,
) -> PostgresBackend:
    """Connect (within ``connect_attempts``), apply migrations, build the tiers.

    The pool is closed by ``stack``, after the tiers have ended. ``observer``
    gets the handler outcomes of the retry tiers and failed inserts.

    Raises:
        ConfigError: No database settings, a bad identifier, or unloadable TLS material.
        ServiceUnavailableError: PostgreSQL stayed unreachable; names ``host:port``.
        SetupError: A migration failed.
    """
    database = config.database
    if database is None:
        raise ConfigError("database", "the postgres retry backend needs database settings")
    template_names(database)  # refuse bad or reserved identifiers before connecting
    pool = await open_pool(
        database,
        attempts=config.connect_attempts,
        interval=config.connect_interval,
        max_size=_POOL_BASE + len(config.retry_intervals),
    )
    stack.push_async_callback(close_pool, pool)
    async with pool.acquire() as conn:
        await migrate(conn, database)
    backend = table_backend(PgRows(pool, database), config, handlers, clock, observer)
    backend.tiers.append(MaintenanceTier(config, pool, clock))
    return attrs.evolve(backend, pool=pool)


def table_backend(
    rows: RetryRows,
    config: Config,
    handlers: Mapping[str, Handler],
    clock: Clock,
    observer: Observer | None = None,
) -> PostgresBackend:
    """The store and the retry tiers of the table backend on ``rows``, without maintenance.

    :func:`open_postgres_backend` builds it on PostgreSQL; the in-memory test
    mode builds it on a table in memory.
    """
    store = PostgresStore(rows, config, clock, observer)
    worker_id = new_worker_id()
    main_of = {topic: topic for topic in config.topics}
    tiers: list[Tier] = []
    for tier in range(1, len(config.retry_intervals) + 1):
        dispatcher = Dispatcher(
            config,
            handlers,
            main_of,
            tier + 1,
            store,
            store,
            clock,
            observer=observer,
            tier=f"retry{tier}",
        )
        tiers.append(TablePoller(tier, config, rows, dispatcher, clock, worker_id))
    return PostgresBackend(store, store, tiers, None, worker_id)


async def apply_migrations(
    database: DatabaseConfig, *, connect_attempts: int = 1, connect_interval: float = 1.0
) -> list[str]:
    """Apply pending migrations of ``database``'s table without starting a consumer.

    Safe to run while consumers start or run: it takes the same advisory lock.

    Returns:
        The versions applied now, e.g. ``["0001_create_table"]``; empty when
        the table was up to date.

    Raises:
        ConfigError: A bad identifier or unloadable TLS material.
        ServiceUnavailableError: PostgreSQL unreachable; names ``host:port``.
        SetupError: PostgreSQL refused a migration.
    """
    template_names(database)
    conn = await connect(database, attempts=connect_attempts, interval=connect_interval)
    try:
        return await migrate(conn, database)
    finally:
        await conn.close()


@attrs.frozen
class RetryCounts:
    """Rows of one consumer group by state.

    Attributes:
        pending: Rows waiting per retry tier (tier ``k`` holds ``attempts = k``).
        succeeded: Succeeded rows not yet deleted by maintenance.
        dead_lettered: Dead-lettered rows.
    """

    pending: dict[int, int] = attrs.field(factory=dict)
    succeeded: int = 0
    dead_lettered: int = 0

    @property
    def total_pending(self) -> int:
        """Rows waiting in any tier."""
        return sum(self.pending.values())

    @classmethod
    def of(cls, groups: Iterable[tuple[str, int, int]]) -> RetryCounts:
        """Totals from ``(state, attempts, rows)`` groups, each (state, attempts) once."""
        pending: dict[int, int] = {}
        totals = {SUCCEEDED: 0, DEAD_LETTERED: 0}
        for state, attempts, n in groups:
            if state == PENDING:
                pending[attempts] = n
            elif state in totals:
                totals[state] += n
        return cls(
            pending=dict(sorted(pending.items())),
            succeeded=totals[SUCCEEDED],
            dead_lettered=totals[DEAD_LETTERED],
        )


async def counts(executor: Executor, database: DatabaseConfig, group: str) -> RetryCounts:
    """Count ``group``'s rows per state, and pending rows per tier."""
    rows = await executor.fetch(Statements.of(database).counts, group)
    return RetryCounts.of((row["state"], row["attempts"], row["n"]) for row in rows)


async def dead_lettered_count(executor: Executor, database: DatabaseConfig, group: str) -> int:
    """How many of ``group``'s rows are dead-lettered."""
    count = await executor.fetchval(Statements.of(database).dead_lettered_count, group)
    return int(count)
