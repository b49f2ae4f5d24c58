"""How many retries per second one consumer handles from the PostgreSQL table.

Inserts ``--rows`` due rows (attempts = 1) straight into a fresh schema, runs
one consumer with a no-op handler and one retry tier, and reports the rate from
the first retry handled until every row is recorded as succeeded: rows claimed,
handled and marked done per second. Needs a broker (the consumer joins its
group) and PostgreSQL; the schema is dropped afterwards::

    python -m bench.bench_postgres_tier --bootstrap 127.0.0.1:9092 --kind kafka \\
        --database-url postgresql://postgres@127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import time
import uuid
from typing import Any

import asyncpg

from bench._common import (
    GROUP_TIMEOUTS,
    Broker,
    broker_of,
    create_topic,
    emit,
    scenario_parser,
    within,
)
from kafka_retry import Config, Consumer, DatabaseConfig, Message
from kafka_retry.retry.table import INSERT_COLUMNS, apply_migrations


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = scenario_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--partitions", type=int, default=4, help="rows spread over this many")
    parser.add_argument("--ordering", choices=["partition", "key", "none"], default="partition")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to give up after")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("--database-url (or DATABASE_URL) is needed")
    return args


async def insert_due_rows(
    conn: asyncpg.Connection[asyncpg.Record],
    database: DatabaseConfig,
    group: str,
    topic: str,
    n: int,
    partitions: int,
) -> None:
    """Insert ``n`` pending rows of tier 1, all due already (COPY, for speed)."""
    failed = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    names, values = [b"trace", b"trace"], [b"1", None]
    tail = (1, "pending", failed, failed, "ValueError", "bench")
    records = [
        (group, topic, i % partitions, i, b"key-%d" % i, b"\xff" * 100, names, values, 0, *tail)
        for i in range(n)
    ]
    await conn.copy_records_to_table(
        database.table, records=records, columns=list(INSERT_COLUMNS), schema_name=database.schema
    )


async def wait_all_succeeded(
    conn: asyncpg.Connection[asyncpg.Record], database: DatabaseConfig
) -> float:
    """Poll until no row is left unfinished; return the perf_counter time then."""
    while True:
        left = await conn.fetchval(
            f"SELECT count(*) FROM {database.qualified_table} WHERE state <> 'succeeded'"
        )
        if left == 0:
            return time.perf_counter()
        await asyncio.sleep(0.005)


async def run(args: argparse.Namespace, broker: Broker) -> dict[str, Any]:
    """Insert the rows, drain them with one consumer, drop the schema; the figures."""
    suffix = uuid.uuid4().hex[:8]
    topic, group = f"bench-{suffix}", f"bench-{suffix}"
    database = DatabaseConfig.from_url(args.database_url, schema=f"bench_{suffix}")
    conn = await asyncpg.connect(args.database_url)
    try:
        await create_topic(broker.bootstrap, topic, args.partitions)
        await apply_migrations(database)
        await insert_due_rows(conn, database, group, topic, args.rows, args.partitions)
        config = Config(
            bootstrap_servers=broker.bootstrap,
            group=group,
            topics=[topic],
            retry_intervals=[60],
            retry_backend="postgres",
            database=database,
            retry_batch_size=args.batch_size,
            ordering=args.ordering,
            idempotence=broker.idempotence,
            session_timeout_ms=GROUP_TIMEOUTS["session_timeout_ms"],
            rebalance_timeout_ms=GROUP_TIMEOUTS["rebalance_timeout_ms"],
            drain_timeout=2.0,  # the rebalance timeout must cover the drain
        )
        handled = 0
        first: float | None = None
        all_handled = asyncio.Event()

        async def no_op(message: Message) -> None:
            nonlocal handled, first
            if first is None:
                first = time.perf_counter()
            handled += 1
            if handled >= args.rows:
                all_handled.set()

        # The retry tier starts before the main tier has joined its group, so
        # the table is watched while the consumer starts, not after.
        consumer = Consumer(config, {topic: no_op})
        running = asyncio.create_task(consumer.run())
        try:
            # Polling the table all along would steal the database's CPU.
            await all_handled.wait()
            done = await wait_all_succeeded(conn, database)
        finally:
            await consumer.stop()
            await running
        assert first is not None
        elapsed = done - first
        rate = args.rows / elapsed
        print(
            f"{args.rows} retries handled ({handled} handler calls) in {elapsed:.2f}s:"
            f" {rate:,.0f} retries/s (batch size {args.batch_size},"
            f" {args.partitions} partition(s), ordering={args.ordering}) on {broker.kind}"
        )
        return {
            "scenario": "postgres-tier",
            "broker": broker.kind,
            "rows": args.rows,
            "batch_size": args.batch_size,
            "handler_calls": handled,
            "seconds": round(elapsed, 4),
            "rate": round(rate, 1),
        }
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{database.schema}" CASCADE')
        await conn.close()


def main() -> None:
    args = parse_args(sys.argv[1:])
    emit(asyncio.run(within(args.timeout, run(args, broker_of(args)))))


if __name__ == "__main__":
    main()
