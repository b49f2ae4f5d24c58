"""TablePoller and PgRows: database errors are retried, never fatal; pending rows are told."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import asyncpg

from kafka_retry import Config, DatabaseConfig, Message
from kafka_retry._clock import SystemClock
from kafka_retry.retry._pg_poller import TablePoller
from kafka_retry.retry._pg_rows import INSERT_COLUMNS, to_datetime
from kafka_retry.retry._pg_table import Outcome, PgRows
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
    dispatcher = Dispatcher(
        config=config,
        handlers={"t": succeeding},
        main_of={"t": "t"},
        attempt=2,
        retry=None,  # type: ignore[arg-type]
        dead_letters=None,  # type: ignore[arg-type]
        clock=clock,
    )
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


class RecordingPool:
    """Accepts every statement; a write's transaction reports one row per id."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    async def execute(self, query: str, *args: object) -> str:
        self.statements.append(query)
        first = args[0] if args else None
        return f"UPDATE {len(first) if isinstance(first, list) else 1}"

    def acquire(self) -> Any:
        pool = self

        class Connection:
            async def __aenter__(self) -> Connection:
                return self

            async def __aexit__(self, *exc: object) -> None:
                pass

            def transaction(self) -> Connection:
                return self

            async def execute(self, query: str, *args: object) -> str:
                return await pool.execute(query, *args)

        return Connection()


async def test_pg_rows_tell_listeners_of_rows_that_become_pending() -> None:
    """Inserts and moves to the next tier are reported with tier and due time; dead letters not."""
    rows = PgRows(RecordingPool(), DatabaseConfig())  # type: ignore[arg-type]
    told: list[tuple[int, dt.datetime]] = []
    rows.on_change(lambda tier, due: told.append((tier, due)))
    due = to_datetime(5_000)

    def params(state: str) -> list[object]:
        values = dict.fromkeys(INSERT_COLUMNS, None)
        values.update(attempts=1, state=state, due_at=due)
        return list(values.values())

    await rows.insert(params("pending"))
    await rows.insert(params("dead_lettered"))
    outcome = Outcome(
        failed=[1, 2],
        states=["pending", "dead_lettered"],
        due=[to_datetime(9_000), due],
        failed_at=[due, due],
        error_types=["E", "E"],
        errors=["e", "e"],
    )
    assert await rows.write(outcome, "me", 1) == 2
    assert told == [(1, due), (2, to_datetime(9_000))]
