"""TablePoller: database errors of a dying session are retried, never fatal."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from kafka_retry import Config, DatabaseConfig, Message
from kafka_retry._clock import SystemClock
from kafka_retry.retry._pg_poller import TablePoller
from kafka_retry.retry._pg_table import PgRows
from kafka_retry.runtime.dispatch import Dispatcher


class DyingSessionPool:
    """A pool whose first claim fails as asyncpg fails on a session killed mid-operation."""

    def __init__(self) -> None:
        self.claims = 0
        self.claimed_again = asyncio.Event()

    async def fetch(self, query: str, *args: object) -> list[Any]:
        self.claims += 1
        if self.claims == 1:
            raise asyncpg.InternalClientError(
                "cannot switch to state 12; another operation (2) is in progress"
            )
        self.claimed_again.set()
        return []

    async def fetchval(self, query: str, *args: object) -> Any:
        return None


async def succeeding(message: Message) -> None:
    pass


async def test_an_internal_client_error_is_retried() -> None:
    """asyncpg's InternalClientError (PostgreSQL killed the session) does not end the poller."""
    config = Config(
        bootstrap_servers="localhost:9092",
        group="g",
        topics=["t"],
        retry_intervals=[1],
        retry_backend="postgres",
        database=DatabaseConfig(),
    )
    clock = SystemClock()
    dispatcher = Dispatcher(config, {"t": succeeding}, {"t": "t"}, 2, None, None, clock)  # type: ignore[arg-type]
    pool = DyingSessionPool()
    rows = PgRows(pool, DatabaseConfig())  # type: ignore[arg-type]
    poller = TablePoller(1, config, rows, dispatcher, clock, "me")
    running = asyncio.create_task(poller.run())
    await asyncio.wait(
        {running, asyncio.create_task(pool.claimed_again.wait())},
        timeout=5,
        return_when=asyncio.FIRST_COMPLETED,
    )
    poller.request_stop()
    await asyncio.wait_for(running, 5)  # raises what ended the poller, if anything did
    assert pool.claims >= 2
