"""What is in the retry table, per consumer group and main topic; and its migrations."""

from __future__ import annotations

import attrs

from kafka_retry.config import DatabaseConfig
from kafka_retry.retry._pg_connect import Executor
from kafka_retry.retry._pg_rows import DEAD_LETTERED, PENDING, SUCCEEDED, WAITING, Statements
from kafka_retry.retry._pg_schema import LEDGER_TABLE, load_migrations, quote

REPLAYED = "replayed"


@attrs.define
class TopicCounts:
    """Rows of one group and main topic, by state.

    Attributes:
        group: The consumer group.
        topic: The main topic.
        pending: Rows waiting per retry tier (tier ``k`` holds ``attempts = k``).
        succeeded: Succeeded rows that maintenance has not deleted yet.
        dead_lettered: Dead-lettered rows not replayed.
        replayed: Dead-lettered rows replayed to their main topic.
        waiting: Rows waiting behind an unsettled row of their key (ordered retries).
    """

    group: str
    topic: str
    pending: dict[int, int] = attrs.field(factory=dict)
    succeeded: int = 0
    dead_lettered: int = 0
    replayed: int = 0
    waiting: int = 0

    def add(self, state: str, attempts: int, count: int) -> None:
        """Count ``count`` rows in ``state`` (with ``attempts``, for pending ones)."""
        if state == PENDING:
            self.pending[attempts] = self.pending.get(attempts, 0) + count
        elif state == SUCCEEDED:
            self.succeeded += count
        elif state == DEAD_LETTERED:
            self.dead_lettered += count
        elif state == REPLAYED:
            self.replayed += count
        elif state == WAITING:
            self.waiting += count


async def table_exists(executor: Executor, database: DatabaseConfig) -> bool:
    """Whether ``database``'s retry table exists."""
    found = await executor.fetchval("SELECT to_regclass($1)", Statements.of(database).table)
    return found is not None


async def topic_counts(
    executor: Executor, database: DatabaseConfig, group: str | None = None
) -> list[TopicCounts]:
    """Counts per group and main topic (of ``group`` only, if given), sorted."""
    table = Statements.of(database).table
    sql = f"SELECT consumer_group, main_topic, state, attempts, count(*) AS n FROM {table}"
    params: list[object] = []
    if group is not None:
        sql += " WHERE consumer_group = $1"
        params.append(group)
    sql += " GROUP BY consumer_group, main_topic, state, attempts"
    found: dict[tuple[str, str], TopicCounts] = {}
    for row in await executor.fetch(sql, *params):
        key = (row["consumer_group"], row["main_topic"])
        counts = found.setdefault(key, TopicCounts(*key))
        counts.add(row["state"], row["attempts"], row["n"])
    return [found[key] for key in sorted(found)]


async def pending_migrations(executor: Executor, database: DatabaseConfig) -> list[str]:
    """Versions shipped with the package that ``database``'s table lacks."""
    ledger = f"{quote(database.schema, 'database.schema')}.{LEDGER_TABLE}"
    shipped = [migration.version for migration in load_migrations()]
    if await executor.fetchval("SELECT to_regclass($1)", ledger) is None:
        return shipped
    rows = await executor.fetch(
        f"SELECT version FROM {ledger} WHERE table_name = $1", database.table
    )
    applied = {row["version"] for row in rows}
    return [version for version in shipped if version not in applied]
