"""Maintenance of the retry table: succeeded rows are deleted after an hour."""

from __future__ import annotations

import asyncio
import logging
from typing import TypeAlias

import asyncpg

from kafka_retry._clock import Clock
from kafka_retry.config import Config, DatabaseConfig
from kafka_retry.retry._pg_connect import TRANSIENT, Executor, Sleeper
from kafka_retry.retry._pg_rows import Statements, affected_rows

log = logging.getLogger("kafka_retry")

Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"

#: Succeeded rows not updated for this many seconds are deleted.
SUCCEEDED_RETENTION = 3600.0
# Bounded chunks keep each DELETE's transaction small, whatever the backlog.
_DELETE_CHUNK = 10_000
_MAINTENANCE_RETRY = 30.0


async def delete_succeeded(
    executor: Executor,
    database: DatabaseConfig,
    group: str,
    older_than: float = SUCCEEDED_RETENTION,
) -> int:
    """Delete ``group``'s succeeded rows not updated for ``older_than`` seconds.

    Deletes in chunks so that no transaction grows with the backlog. Pending
    and dead-lettered rows are never touched. Returns how many were deleted.
    """
    sql = Statements.of(database).delete_succeeded
    total = 0
    while True:
        deleted = affected_rows(
            await executor.execute(sql, group, float(older_than), _DELETE_CHUNK)
        )
        total += deleted
        if deleted < _DELETE_CHUNK:
            return total


class MaintenanceTier:
    """Deletes old succeeded rows at start and every ``maintenance_interval`` seconds."""

    def __init__(self, config: Config, pool: Pool, clock: Clock) -> None:
        assert config.database is not None
        self.name = "maintenance"
        self.ready = asyncio.Event()
        self._config = config
        self._database = config.database
        self._pool = pool
        self._sleeper = Sleeper(clock)

    def request_stop(self) -> None:
        """End :meth:`run` now (a running delete finishes first)."""
        self._sleeper.stop()

    async def run(self) -> None:
        """Delete, sleep, repeat until stopped; database errors are logged and retried."""
        self.ready.set()
        interval = self._config.maintenance_interval
        while not self._sleeper.stopping:
            try:
                deleted = await delete_succeeded(self._pool, self._database, self._config.group)
            except TRANSIENT as exc:
                log.warning("maintenance: deleting succeeded rows failed: %s", exc)
                await self._sleeper.nap(min(interval, _MAINTENANCE_RETRY))
                continue
            if deleted:
                log.info("maintenance: deleted %d succeeded retry row(s)", deleted)
            await self._sleeper.nap(interval)
