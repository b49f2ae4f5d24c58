"""The main tier's cost of ordered retries: the per-message key lookup during a storm.

A storm has left ``--storm-keys`` keys with pending retries in the table (rows
inserted straight into a fresh schema, due in an hour, spread over the
partitions). The topic's records have other keys, so every message reaches the
handler, and each one pays what ordered retries add on the main tier: hashing
its key and looking it up in its partition's set of held keys. The same topic
is consumed twice, with ``ordered_retries`` off and on (postgres backend both
times), and the rates are compared::

    python -m bench.bench_ordered --bootstrap 127.0.0.1:9092 --kind kafka \\
        --database-url postgresql://postgres@127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import uuid
from typing import Any

import asyncpg

from bench._common import (
    GROUP_TIMEOUTS,
    Broker,
    Meter,
    broker_of,
    create_topic,
    distinct_keys,
    emit,
    padded,
    print_rate,
    produce,
    scenario_parser,
    within,
)
from kafka_retry import Config, Consumer, DatabaseConfig, Message
from kafka_retry.retry.postgres import apply_migrations
from kafka_retry.retry.table import INSERT_COLUMNS, key_hash


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = scenario_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--storm-keys", type=int, default=10_000)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("--database-url (or DATABASE_URL) is needed")
    return args


async def insert_storm(
    conn: asyncpg.Connection[asyncpg.Record],
    database: DatabaseConfig,
    group: str,
    topic: str,
    keys: int,
    partitions: int,
) -> None:
    """Pending tier-1 rows for ``keys`` storm keys, due in an hour (COPY, for speed)."""
    failed = dt.datetime.now(dt.UTC)
    due = failed + dt.timedelta(hours=1)
    records = []
    for i in range(keys):
        key = b"storm-%d" % i
        head = (group, topic, i % partitions, i, key, b"v", [], [], 0, 1, "pending", due, failed)
        records.append((*head, "ValueError", "storm", None, key_hash(key)))
    await conn.copy_records_to_table(
        database.table, records=records, columns=list(INSERT_COLUMNS), schema_name=database.schema
    )


async def consume(
    args: argparse.Namespace, broker: Broker, topic: str, ordered: bool
) -> dict[str, Any]:
    """Consume the topic once, in a fresh group and schema with the storm's rows; the rate."""
    suffix = uuid.uuid4().hex[:8]
    group = f"bench-{suffix}"
    database = DatabaseConfig.from_url(args.database_url, schema=f"bench_{suffix}")
    conn = await asyncpg.connect(args.database_url)
    try:
        await apply_migrations(database)
        await insert_storm(conn, database, group, topic, args.storm_keys, args.partitions)
        config = Config(
            bootstrap_servers=broker.bootstrap,
            group=group,
            topics=[topic],
            retry_intervals=[3600],
            retry_backend="postgres",
            database=database,
            ordered_retries=ordered,
            idempotence=broker.idempotence,
            metrics=False,
            session_timeout_ms=GROUP_TIMEOUTS["session_timeout_ms"],
            rebalance_timeout_ms=GROUP_TIMEOUTS["rebalance_timeout_ms"],
            drain_timeout=2.0,
        )
        meter = Meter(args.messages)

        async def no_op(message: Message) -> None:
            meter.hit()

        async with Consumer(config, {topic: no_op}):
            await meter.done.wait()
        print_rate(f"kafka-retry postgres ordered_retries={ordered} on {broker.kind}", meter)
        return {"ordered_retries": ordered, "rate": round(meter.rate, 1)}
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{database.schema}" CASCADE')
        await conn.close()


async def run(args: argparse.Namespace, broker: Broker) -> dict[str, Any]:
    """Both runs on one topic; the ratio of the rates."""
    topic = f"bench-ordered-{uuid.uuid4().hex[:8]}"
    await create_topic(broker.bootstrap, topic, args.partitions)
    await produce(
        broker.bootstrap, topic, args.messages, args.partitions, padded(200),
        distinct_keys(args.messages),
    )  # fmt: skip
    off = await consume(args, broker, topic, ordered=False)
    on = await consume(args, broker, topic, ordered=True)
    ratio = on["rate"] / off["rate"]
    print(
        f"ordered retries keep {ratio:.2f}x of the main tier's rate ({args.storm_keys} keys held)"
    )
    return {
        "scenario": "ordered-main-tier",
        "broker": broker.kind,
        "messages": args.messages,
        "storm_keys": args.storm_keys,
        "rate_off": off["rate"],
        "rate_on": on["rate"],
        "ratio": round(ratio, 3),
    }


def main() -> None:
    args = parse_args(sys.argv[1:])
    emit(asyncio.run(within(args.timeout, run(args, broker_of(args)))))


if __name__ == "__main__":
    main()
