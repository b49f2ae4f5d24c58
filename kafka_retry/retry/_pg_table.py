"""Where the table backend keeps its rows: the interface, and PostgreSQL behind it.

The table backend's code (:class:`~kafka_retry.retry.postgres.PostgresStore`
inserting failures, :class:`~kafka_retry.retry._pg_poller.TablePoller` claiming
and recording) talks to a :class:`RetryRows`. In production that is
:class:`PgRows`, the SQL of :class:`~kafka_retry.retry._pg_rows.Statements` on
an asyncpg pool; the in-memory test mode passes a table kept in memory with the
same semantics, so both run the same backend code.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Protocol, TypeAlias

import asyncpg
import attrs

from kafka_retry.config import DatabaseConfig
from kafka_retry.retry._pg_rows import (
    DEAD_LETTERED,
    INSERT_COLUMNS,
    PENDING,
    WAITING,
    Row,
    Statements,
    affected_rows,
)

Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"

#: The longest a PostgreSQL poller sleeps, so that rows added by others are seen soon.
POLL_CAP = 1.0

#: Told that a row of retry tier ``tier`` is pending with due time ``due``.
Listener = Callable[[int, dt.datetime], None]
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ATTEMPTS = INSERT_COLUMNS.index("attempts")
_STATE = INSERT_COLUMNS.index("state")
_DUE_AT = INSERT_COLUMNS.index("due_at")


@attrs.define
class Outcome:
    """What happened to a claimed batch: succeeded, failed (moved on or dead-lettered), released.

    ``failed`` and the lists after it are parallel: one entry per failed row.
    """

    succeeded: list[int] = attrs.Factory(list)
    failed: list[int] = attrs.Factory(list)
    states: list[str] = attrs.Factory(list)
    due: list[dt.datetime] = attrs.Factory(list)
    failed_at: list[dt.datetime] = attrs.Factory(list)
    error_types: list[str] = attrs.Factory(list)
    errors: list[str] = attrs.Factory(list)
    spans: list[str | None] = attrs.Factory(list)
    released: list[int] = attrs.Factory(list)

    @property
    def rows(self) -> int:
        return len(self.succeeded) + len(self.failed) + len(self.released)


class RetryRows(Protocol):
    """The rows of the retry table, as the table backend uses them.

    Every write of a poller is guarded: it changes a row only while the row is
    pending at the poller's tier and leased to the poller's worker id.
    Methods may raise the errors of :data:`~kafka_retry.retry._pg_connect.TRANSIENT`;
    callers retry those.
    """

    @property
    def where(self) -> str:
        """``schema.table``, for logs and metric labels."""

    @property
    def poll_cap(self) -> float | None:
        """The longest an idle poller sleeps; None when :meth:`on_change` reports every change."""

    def on_change(self, listener: Listener) -> None:
        """Call ``listener(tier, due)`` when a row becomes pending at ``tier`` through this object.

        Rows that other processes write are not reported; pollers find those
        within :attr:`poll_cap`.
        """

    async def insert(self, params: Sequence[object]) -> None:
        """Insert one row: the values of :data:`~kafka_retry.retry._pg_rows.INSERT_COLUMNS`."""

    async def insert_many(self, rows: Sequence[Sequence[object]]) -> None:
        """Insert rows like :meth:`insert`, in one transaction: all of them or none."""

    async def claim(
        self,
        group: str,
        tier: int,
        limit: int,
        lease: float,
        worker: str,
        topics: Sequence[str],
    ) -> list[Row]:
        """Lease up to ``limit`` pending rows of ``tier`` that are due, earliest first.

        "Due" and the lease (``lease`` seconds) are measured on the table's
        clock (PostgreSQL's ``now()``), never the caller's.
        """

    async def due_in(self, group: str, tier: int, topics: Sequence[str]) -> float | None:
        """Seconds until the earliest pending row of ``tier`` not yet due falls due, or None."""

    async def extend(self, ids: Sequence[int], worker: str, tier: int, lease: float) -> None:
        """Lease ``worker``'s rows ``ids`` for ``lease`` more seconds from the table's now."""

    async def write(self, outcome: Outcome, worker: str, tier: int) -> int:
        """Record ``outcome`` atomically; return how many rows were still ``worker``'s."""

    async def unsettled_keys(self, group: str, topic: str, partition: int) -> set[bytes]:
        """Keys of ``topic``'s ``partition`` with an unsettled ordered row (ordered retries)."""


class PgRows:
    """:class:`RetryRows` in a PostgreSQL table, through an asyncpg pool.

    Args:
        pool: The connection pool.
        database: Names the schema and table.
        ordered: Ordered retries are on: tell tier 0 when rows settle.
        cascade_dead_letters: Dead-letter a key's waiting rows with its head
            (``ordered_dead_letter="dead_letter"``).
    """

    def __init__(
        self,
        pool: Pool,
        database: DatabaseConfig,
        *,
        ordered: bool = False,
        cascade_dead_letters: bool = False,
    ) -> None:
        self._pool = pool
        self._ordered = ordered
        self._cascade = cascade_dead_letters
        self._sql = Statements.of(database)
        self._schema, self._table = database.schema, database.table
        self.where = f"{database.schema}.{database.table}"
        self.poll_cap: float | None = POLL_CAP
        self._listeners: list[Listener] = []

    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def insert(self, params: Sequence[object]) -> None:
        await self._pool.execute(self._sql.insert, *params)
        if params[_STATE] in (PENDING, WAITING):
            _tell(self._listeners, params[_ATTEMPTS], params[_DUE_AT])

    async def insert_many(self, rows: Sequence[Sequence[object]]) -> None:
        # COPY: about twice the rows per second of a multi-row INSERT or executemany.
        async with self._pool.acquire() as conn:
            await conn.copy_records_to_table(
                self._table, schema_name=self._schema, columns=INSERT_COLUMNS, records=rows
            )
        earliest: dict[object, object] = {}
        for params in rows:
            if params[_STATE] == PENDING:
                tier, due = params[_ATTEMPTS], params[_DUE_AT]
                known = earliest.get(tier)
                if known is None or due < known:  # type: ignore[operator]
                    earliest[tier] = due
        for tier, due in earliest.items():  # the earliest is news; the later ones are not
            _tell(self._listeners, tier, due)

    async def claim(
        self,
        group: str,
        tier: int,
        limit: int,
        lease: float,
        worker: str,
        topics: Sequence[str],
    ) -> list[Row]:
        sql = self._sql.claim_waiting if tier == 0 else self._sql.claim
        return list(await self._pool.fetch(sql, group, tier, limit, lease, worker, list(topics)))

    async def unsettled_keys(self, group: str, topic: str, partition: int) -> set[bytes]:
        rows = await self._pool.fetch(self._sql.unsettled_keys, group, topic, partition)
        return {row[0] for row in rows}

    async def due_in(self, group: str, tier: int, topics: Sequence[str]) -> float | None:
        seconds: float | None = await self._pool.fetchval(
            self._sql.due_in, group, tier, list(topics)
        )
        return seconds

    async def extend(self, ids: Sequence[int], worker: str, tier: int, lease: float) -> None:
        await self._pool.execute(self._sql.extend, list(ids), worker, tier, lease)

    async def write(self, outcome: Outcome, worker: str, tier: int) -> int:
        sql = self._sql
        changed = 0
        async with self._pool.acquire() as conn, conn.transaction():
            if outcome.succeeded:
                status = await conn.execute(sql.succeed, outcome.succeeded, worker, tier)
                changed += affected_rows(status)
            if outcome.failed:
                status = await conn.execute(
                    sql.fail,
                    outcome.failed,
                    worker,
                    tier,
                    outcome.states,
                    outcome.due,
                    outcome.failed_at,
                    outcome.error_types,
                    outcome.errors,
                    outcome.spans,
                )
                changed += affected_rows(status)
            if outcome.released:
                status = await conn.execute(sql.release, outcome.released, worker, tier)
                changed += affected_rows(status)
            dead = [
                i for i, s in zip(outcome.failed, outcome.states, strict=True) if s == DEAD_LETTERED
            ]
            if self._cascade and dead:
                await conn.execute(sql.dead_letter_followers, dead)
        for state, due in zip(outcome.states, outcome.due, strict=True):
            if state == PENDING:
                _tell(self._listeners, tier + 1, due)
        if self._ordered and (outcome.succeeded or outcome.failed):
            # A settled row may be the head of a key: the rows behind it are claimable now.
            _tell(self._listeners, 0, _EPOCH)
        return changed


def _tell(listeners: Sequence[Listener], tier: object, due: object) -> None:
    assert isinstance(tier, int) and isinstance(due, dt.datetime)
    for listener in listeners:
        listener(tier, due)
