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
    attempts int             state text: pending | waiting | succeeded | dead_lettered | replayed
    due_at timestamptz       failed_at timestamptz
    claimed_until timestamptz  claimed_by text        (the lease)
    last_error_type text     last_error text
    created_at timestamptz   updated_at timestamptz
    key_hash bigint          (ordered retries; NULL: not ordered)

``attempts`` counts the attempts made: a pending row with ``attempts = k``
waits for tier ``k`` (whose handler sees ``message.attempt == k + 1``).

With ``ordered_retries`` a message whose key has an unsettled row is stored as
``waiting`` (``attempts = 0``) instead of being handled; tier 0 runs it once it
leads its key (see ``_pg_order.py`` and :attr:`Statements.claim`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Coroutine
from typing import Any, TypeAlias

import asyncpg
import attrs

from kafka_retry._clock import Clock
from kafka_retry._observe import NullObserver, Observer
from kafka_retry.config import Config
from kafka_retry.errors import ConfigError
from kafka_retry.retry._pg_connect import (
    TRANSIENT,
    Backoff,
    Executor,
    close_pool,
    open_pool,
)
from kafka_retry.retry._pg_group import GroupCommit
from kafka_retry.retry._pg_maintenance import MaintenanceTier, delete_succeeded
from kafka_retry.retry._pg_order import KeyGate
from kafka_retry.retry._pg_poller import TablePoller
from kafka_retry.retry._pg_rows import (
    DEAD_LETTERED,
    PENDING,
    insert_params,
    waiting_params,
)
from kafka_retry.retry._pg_schema import migrate, template_names
from kafka_retry.retry._pg_table import PgRows, RetryRows
from kafka_retry.retry._tickets import ride
from kafka_retry.retry.base import BackendParts, Failure
from kafka_retry.retry.table import RetryCounts, apply_migrations, counts, dead_lettered_count
from kafka_retry.runtime.builder import TierBuilder
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
    "new_worker_id",
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
    Concurrent inserts (every partition's, every tier's) are committed together,
    a batch per transaction (see :mod:`._pg_group`).

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
        self._commits = GroupCommit(rows)
        self._intervals = config.retry_intervals
        self._ordered = config.ordered_retries
        self._clock = clock
        self._observer: Observer = observer or NullObserver()

    async def schedule(self, failure: Failure) -> None:
        """Insert a pending row with ``attempts = failure.attempts``, due after its interval."""
        delay = self._intervals[failure.attempts - 1]
        due_ms = failure.failed_at + round(delay * 1000)
        await self._insert(failure, insert_params(failure, PENDING, due_ms, self._ordered))

    def start(self, failure: Failure) -> asyncio.Future[None]:
        """Start storing ``failure`` (pending row, or dead-lettered if final), without a task.

        The row joins the group commit's open batch; the future returned is
        shared with the other failures of the same source partition in that
        batch and done once the transaction committed. A failed transaction
        stores each of its failures again the ordinary way (with backoff).
        """
        if failure.final:
            params = insert_params(failure, DEAD_LETTERED, failure.failed_at, self._ordered)
        else:
            due_ms = failure.failed_at + round(self._intervals[failure.attempts - 1] * 1000)
            params = insert_params(failure, PENDING, due_ms, self._ordered)
        batch = self._commits.add(params)
        return ride(batch.tickets, batch.receipt, failure, self._resend)

    def _resend(self, failure: Failure) -> Coroutine[Any, Any, None]:
        return self.dead_letter(failure) if failure.final else self.schedule(failure)

    async def dead_letter(self, failure: Failure) -> None:
        """Insert a dead-lettered row."""
        params = insert_params(failure, DEAD_LETTERED, failure.failed_at, self._ordered)
        await self._insert(failure, params)

    async def wait_behind(self, failure: Failure) -> None:
        """Insert ``failure``'s message as a waiting row (ordered retries), due at once."""
        await self._insert(failure, waiting_params(failure))

    async def _insert(self, failure: Failure, params: tuple[object, ...]) -> None:
        backoff = Backoff()
        while True:
            try:
                await self._commits.insert(params)
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


def new_worker_id() -> str:
    """``host:pid:random``: unique per backend instance, readable in ``claimed_by``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class PostgresBackend:
    """The postgres backend: failures wait as rows, one table poller per retry tier.

    Args:
        table: Where the rows live; default: the table of ``config.database``
            in PostgreSQL (connected, migrated, with a maintenance task). The
            in-memory test mode passes a table in memory.
    """

    def __init__(self, table: RetryRows | None = None) -> None:
        self._table = table

    async def open(self, builder: TierBuilder) -> BackendParts:
        """Connect (within ``connect_attempts``), apply migrations, build the tiers.

        The pool is closed by ``builder.stack``, after the tiers have ended.

        Raises:
            ConfigError: No database settings, a bad identifier, or unloadable TLS material.
            ServiceUnavailableError: PostgreSQL stayed unreachable; names ``host:port``.
            SetupError: A migration failed.
        """
        if self._table is not None:
            return self._parts(self._table, builder)
        config = builder.config
        database = config.database
        if database is None:
            raise ConfigError("database", "the postgres retry backend needs database settings")
        template_names(database)  # refuse bad or reserved identifiers before connecting
        pool = await open_pool(
            database,
            attempts=config.connect_attempts,
            interval=config.connect_interval,
            max_size=_POOL_BASE + len(config.retry_intervals) + config.ordered_retries,
        )
        builder.stack.push_async_callback(close_pool, pool)
        async with pool.acquire() as conn:
            await migrate(conn, database)
        cascade = config.ordered_dead_letter == "dead_letter"
        rows = PgRows(pool, database, ordered=config.ordered_retries, cascade_dead_letters=cascade)
        parts = self._parts(rows, builder)
        parts.tiers.append(MaintenanceTier(config, pool, builder.clock))
        return attrs.evolve(parts, pool=pool)

    @staticmethod
    def _parts(rows: RetryRows, builder: TierBuilder) -> BackendParts:
        config = builder.config
        store = PostgresStore(rows, config, builder.clock, builder.observer)
        worker_id = new_worker_id()
        main_of = {topic: topic for topic in config.topics}
        tiers: list[Tier] = []
        key_order = None
        if config.ordered_retries:
            # Tier 0 runs waiting rows (attempts = 0) as first attempts, once they lead their key.
            dispatcher = builder.dispatcher("retry0", main_of, 1, store, store)
            tiers.append(TablePoller(0, config, rows, dispatcher, builder.clock, worker_id))
            key_order = KeyGate(rows, config.group, store.wait_behind, builder.clock)
        for tier in range(1, len(config.retry_intervals) + 1):
            dispatcher = builder.dispatcher(f"retry{tier}", main_of, tier + 1, store, store)
            tiers.append(TablePoller(tier, config, rows, dispatcher, builder.clock, worker_id))
        return BackendParts(retry=store, dead_letters=store, tiers=tiers, key_order=key_order)
