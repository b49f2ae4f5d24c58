"""Dead letters of the postgres backend: the retry table's dead-lettered rows.

A replay to the main topic sends a batch of rows (locked ``FOR UPDATE SKIP
LOCKED``, so two operators replaying at once never send the same row), waits
for the broker's acks, and marks the rows ``replayed`` in the same transaction.
A crash before the commit leaves them dead-lettered: the next replay may send
that batch again, never loses it. A replay to retry tier ``k`` is one UPDATE:
the rows become pending with ``attempts = k``, due now. Either way a row is no
longer dead-lettered, so running the replay again selects nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import attrs
from aiokafka.errors import KafkaError

from kafka_retry.config import Config, DatabaseConfig
from kafka_retry.deadletter._clients import Sent, StoreClients, produce_all
from kafka_retry.deadletter._model import (
    DeadLetterEntry,
    DeadLetterQuery,
    ProgressCallback,
    PurgePlan,
    ReplayResult,
    ReplayTarget,
    parse_row_id,
)
from kafka_retry.deadletter._pg_sql import COLUMNS, Filter, query_filter, row_entry, states
from kafka_retry.deadletter._replay import replayed_record
from kafka_retry.errors import ConfigError, DeadLetterError
from kafka_retry.retry.table import DEAD_LETTERED, TRANSIENT, Statements, address, connect, migrate

__all__ = ["PostgresDeadLetters"]

_BATCH = 200


class PostgresDeadLetters(StoreClients):
    """Lists, shows, replays and purges the dead letters of the postgres backend.

    Use as ``async with PostgresDeadLetters(config) as store:``. Rows of
    ``config.group`` are seen; ``config.topics`` unless a query names others.
    Opening applies pending migrations (replays need the ``replayed`` state).

    Args:
        config: The consumer's settings; ``database`` must be set. Kafka is
            only contacted to replay to a main topic.

    Raises:
        ConfigError: No database settings.
    """

    def __init__(self, config: Config) -> None:
        if config.database is None:
            raise ConfigError("database", "the postgres backend needs database settings")
        super().__init__(config)
        self._database: DatabaseConfig = config.database
        self._table = Statements.of(config.database).table
        self._source = f"{config.database.schema}.{config.database.table}"
        self._conn: Any = None

    async def __aenter__(self) -> PostgresDeadLetters:
        config = self._config
        conn = await connect(
            self._database, attempts=config.connect_attempts, interval=config.connect_interval
        )
        self._stack.push_async_callback(conn.close)
        try:
            with self._translated():
                if await conn.fetchval("SELECT to_regclass($1)", self._table) is None:
                    raise DeadLetterError(
                        f"no retry table {self._table} at {address(self._database)}: "
                        "start a consumer with the postgres backend or run `kafka-retry db migrate`"
                    )
                await migrate(conn, self._database)
        except BaseException:
            await self._stack.aclose()
            raise
        self._conn = conn
        return self

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except TRANSIENT as exc:
            raise DeadLetterError(f"PostgreSQL at {address(self._database)}: {exc}") from exc
        except KafkaError as exc:
            raise DeadLetterError(f"Kafka at {self._config.bootstrap}: {exc}") from exc

    def _where(self, query: DeadLetterQuery, replayed: bool | None) -> Filter:
        topics = query.topics or self._config.topics
        return query_filter(self._config.group, topics, query, states(replayed))

    def _connection(self) -> Any:
        if self._conn is None:
            raise DeadLetterError("use the dead-letter store inside `async with`")
        return self._conn

    async def entries(self, query: DeadLetterQuery) -> AsyncGenerator[DeadLetterEntry, None]:
        """Yield the dead letters the query selects, oldest row first.

        Raises:
            DeadLetterError: An id is not a row id, or PostgreSQL failed.
        """
        conn = self._connection()
        where = self._where(query, query.replayed)
        after = 0
        while True:
            sql = (
                f"SELECT {COLUMNS} FROM {self._table} WHERE {where.sql}"
                f" AND id > ${len(where.params) + 1} ORDER BY id LIMIT {_BATCH}"
            )
            with self._translated():
                rows = await conn.fetch(sql, *where.params, after)
            for row in rows:
                yield row_entry(row, self._source)
            if len(rows) < _BATCH:
                return
            after = rows[-1]["id"]

    async def get(self, text: str, topic: str | None = None) -> DeadLetterEntry:
        """The dead letter with row id ``text`` (``topic`` is ignored: ids are unique).

        Raises:
            DeadLetterError: Not a row id, or no dead letter of the group has it.
        """
        row_id = parse_row_id(text)
        sql = (
            f"SELECT {COLUMNS} FROM {self._table}"
            " WHERE id = $1 AND consumer_group = $2 AND state = ANY($3::text[])"
        )
        with self._translated():
            row = await self._connection().fetchrow(sql, row_id, self._config.group, states(None))
        if row is None:
            raise DeadLetterError(
                f"no dead letter with id {row_id} for group {self._config.group} in {self._table}"
            )
        return row_entry(row, self._source)

    async def replay(
        self,
        query: DeadLetterQuery,
        target: ReplayTarget | None = None,
        *,
        dry_run: bool = False,
        progress: ProgressCallback | None = None,
    ) -> ReplayResult:
        """Replay the selected dead-lettered rows to their main topic or a retry tier.

        Raises:
            DeadLetterError: The tier does not exist, an id is malformed, or a
                PostgreSQL or Kafka error.
        """
        target = target or ReplayTarget()
        tiers = len(self._config.retry_intervals)
        if target.tier is not None and target.tier > tiers:
            raise DeadLetterError(
                f"retry tier {target.tier} does not exist: {tiers} retry tier(s) "
                "with the configured retry intervals"
            )
        conn = self._connection()
        selected = self._where(query, replayed=False)
        with self._translated():
            rows = await conn.fetch(
                f"SELECT id, main_topic FROM {self._table} WHERE {selected.sql} ORDER BY id",
                *selected.params,
            )
            already = self._where(query, replayed=True)
            previous = await conn.fetchval(
                f"SELECT count(*) FROM {self._table} WHERE {already.sql}", *already.params
            )
        ids = tuple(f"{row['main_topic']}:{row['id']}" for row in rows)
        result = ReplayResult(target, len(rows), 0, int(previous), dry_run, ids)
        if dry_run or not rows:
            return result
        max_id = rows[-1]["id"]
        if target.tier is None:
            done = await self._replay_to_topics(selected, max_id, len(rows), progress)
        else:
            done = await self._replay_to_tier(selected, max_id, target.tier)
            if progress is not None:
                progress(done, len(rows))
        return attrs.evolve(result, replayed=done)

    async def _replay_to_tier(self, where: Filter, max_id: int, tier: int) -> int:
        n = len(where.params)
        sql = (
            f"UPDATE {self._table} SET state = 'pending', attempts = ${n + 2}, due_at = now(),"
            " claimed_until = NULL, claimed_by = NULL, replayed_at = now(),"
            f" replayed_to = ${n + 3}, updated_at = now()"
            f" WHERE {where.sql} AND id <= ${n + 1}"
        )
        with self._translated():
            status = await self._connection().execute(
                sql, *where.params, max_id, tier, f"retry{tier}"
            )
        return int(status.rsplit(" ", 1)[-1])

    async def _replay_to_topics(
        self, where: Filter, max_id: int, total: int, progress: ProgressCallback | None
    ) -> int:
        conn = self._connection()
        n = len(where.params)
        select = (
            f"SELECT {COLUMNS} FROM {self._table} WHERE {where.sql}"
            f" AND id <= ${n + 1} AND id > ${n + 2} ORDER BY id LIMIT {_BATCH}"
            " FOR UPDATE SKIP LOCKED"
        )
        mark = (
            f"UPDATE {self._table} SET state = 'replayed', replayed_at = now(),"
            " replayed_to = main_topic, updated_at = now()"
            " WHERE id = ANY($1::bigint[]) AND state = $2"
        )
        done, after = 0, 0
        while True:
            with self._translated():
                async with conn.transaction():
                    rows = await conn.fetch(select, *where.params, max_id, after)
                    if not rows:
                        return done
                    sent = await self._send([row_entry(row, self._source) for row in rows])
                    # Those acknowledged are marked (committed) even when another
                    # failed: a second replay must not send them again.
                    acked = [rows[index]["id"] for index in sent.acked]
                    await conn.execute(mark, acked, DEAD_LETTERED)
                sent.raise_error()
            done += len(rows)
            after = rows[-1]["id"]
            if progress is not None:
                progress(done, total)

    async def _send(self, entries: list[DeadLetterEntry]) -> Sent:
        producer = await self._ensure_producer()
        now = int(time.time() * 1000)
        return await produce_all(
            producer,
            [
                replayed_record(entry, entry.main_topic, f"{self._source}:{entry.id}", now, None)
                for entry in entries
            ],
        )

    async def plan_purge(self, query: DeadLetterQuery) -> PurgePlan:
        """Count what :meth:`purge` deletes; rows dead-lettered later are kept.

        Raises:
            DeadLetterError: An id is not a row id, or PostgreSQL failed.
        """
        where = self._where(query, query.replayed)
        sql = (
            f"SELECT main_topic, count(*) AS n, max(id) AS last FROM {self._table}"
            f" WHERE {where.sql} GROUP BY main_topic ORDER BY main_topic"
        )
        with self._translated():
            rows = await self._connection().fetch(sql, *where.params)
        per_topic = {row["main_topic"]: int(row["n"]) for row in rows}
        max_id = max((row["last"] for row in rows), default=None)
        return PurgePlan(query, sum(per_topic.values()), per_topic, max_id=max_id)

    async def purge(self, plan: PurgePlan) -> int:
        """Delete the rows ``plan`` selected; return how many went.

        Raises:
            DeadLetterError: PostgreSQL failed.
        """
        if plan.max_id is None:
            return 0
        where = self._where(plan.query, plan.query.replayed)
        sql = f"DELETE FROM {self._table} WHERE {where.sql} AND id <= ${len(where.params) + 1}"
        with self._translated():
            status = await self._connection().execute(sql, *where.params, plan.max_id)
        return int(status.rsplit(" ", 1)[-1])
