"""The retry table as the tools around the postgres backend see it.

The dead-letter tools, the command line, the metrics and the in-memory test
mode read and write the table through this module: its row states and row
model, its SQL statements, connecting, migrations and counts. The backend
itself (``retry/postgres.py``) and these share the private ``_pg_*`` modules
behind it.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from kafka_retry.config import DatabaseConfig
from kafka_retry.retry._pg_connect import (
    TRANSIENT,
    Executor,
    address,
    close_pool,
    connect,
    open_pool,
)
from kafka_retry.retry._pg_rows import (
    DEAD_LETTERED,
    INSERT_COLUMNS,
    PENDING,
    STATES,
    SUCCEEDED,
    WAITING,
    Row,
    Statements,
    decode_headers,
    floor_datetime,
    key_hash,
    row_message,
    to_datetime,
    to_epoch_ms,
)
from kafka_retry.retry._pg_schema import migrate, template_names
from kafka_retry.retry._pg_status import (
    REPLAYED,
    TopicCounts,
    pending_migrations,
    table_exists,
    topic_counts,
)
from kafka_retry.retry._pg_table import Listener, Outcome, PgRows, RetryRows

__all__ = [
    "DEAD_LETTERED",
    "INSERT_COLUMNS",
    "PENDING",
    "REPLAYED",
    "STATES",
    "SUCCEEDED",
    "TRANSIENT",
    "WAITING",
    "Executor",
    "Listener",
    "Outcome",
    "PgRows",
    "RetryCounts",
    "RetryRows",
    "Row",
    "Statements",
    "TopicCounts",
    "address",
    "apply_migrations",
    "close_pool",
    "connect",
    "counts",
    "dead_lettered_count",
    "decode_headers",
    "floor_datetime",
    "key_hash",
    "migrate",
    "open_pool",
    "pending_migrations",
    "row_message",
    "table_exists",
    "template_names",
    "to_datetime",
    "to_epoch_ms",
    "topic_counts",
]


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
        waiting: Rows waiting behind an unsettled row of their key (ordered retries).
    """

    pending: dict[int, int] = attrs.field(factory=dict)
    succeeded: int = 0
    dead_lettered: int = 0
    waiting: int = 0

    @property
    def total_pending(self) -> int:
        """Rows waiting in any tier."""
        return sum(self.pending.values())

    @classmethod
    def of(cls, groups: Iterable[tuple[str, int, int]]) -> RetryCounts:
        """Totals from ``(state, attempts, rows)`` groups, each (state, attempts) once."""
        pending: dict[int, int] = {}
        totals = {SUCCEEDED: 0, DEAD_LETTERED: 0, WAITING: 0}
        for state, attempts, n in groups:
            if state == PENDING:
                pending[attempts] = n
            elif state in totals:
                totals[state] += n
        return cls(
            pending=dict(sorted(pending.items())),
            succeeded=totals[SUCCEEDED],
            dead_lettered=totals[DEAD_LETTERED],
            waiting=totals[WAITING],
        )


async def counts(executor: Executor, database: DatabaseConfig, group: str) -> RetryCounts:
    """Count ``group``'s rows per state, and pending rows per tier."""
    rows = await executor.fetch(Statements.of(database).counts, group)
    return RetryCounts.of((row["state"], row["attempts"], row["n"]) for row in rows)


async def dead_lettered_count(executor: Executor, database: DatabaseConfig, group: str) -> int:
    """How many of ``group``'s rows are dead-lettered."""
    count = await executor.fetchval(Statements.of(database).dead_lettered_count, group)
    return int(count)
