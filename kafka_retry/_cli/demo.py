"""``kafka-retry demo``: a few hundred orders through the retry tiers, watched live.

Runs against ``$KAFKA_BOOTSTRAP_SERVERS`` (and ``$DATABASE_URL``) when set,
else against the devstack, which it starts if needed. Every run uses a fresh
topic and consumer group, so runs never see each other's messages. It ends
with a summary whose last line reads, for the defaults,
``demo: 300 orders, 293 handled, 7 dead-lettered``, and exits 1 if the run
did not end as the orders are designed to.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shlex
import sys
import time

import attrs
from aiokafka.admin import NewTopic

from kafka_retry import devstack
from kafka_retry._cli._common import Commands, configure_logging, run_async, verbosity
from kafka_retry._cli._demo_app import Expected, Shop, Snapshot, Tally, expected, order_record
from kafka_retry._cli._demo_view import View, tier_table
from kafka_retry._cli._output import format_duration
from kafka_retry._kafka import AIOKafkaTransport, start_admin, start_producer
from kafka_retry.config import Config, DatabaseConfig
from kafka_retry.deadletter import DeadLetterQuery, open_dead_letters
from kafka_retry.runtime.consumer import Consumer, ConsumerState

_INTERVALS = (1.0, 2.0)
_PARTITIONS = 3
_DEMO_SCHEMA = "kafka_retry_demo"


@attrs.frozen
class Setup:
    """Where the demo runs.

    Attributes:
        config: The consumer's settings (fresh topic and group).
        orders: How many orders to send.
        database_hint: How the "what next" commands should name the database.
        local: Whether the devstack serves the run (rather than given addresses).
    """

    config: Config
    orders: int
    database_hint: str | None
    local: bool


def register(commands: Commands) -> None:
    """Add ``demo``."""
    demo = commands.add_parser(
        "demo",
        parents=[verbosity()],
        help="watch a few hundred orders go through the retry tiers",
        description=(
            "Produce sample order events and consume them with a handler that succeeds, "
            "fails transiently (a flaky upstream that recovers) or fails for good (poison "
            "orders), with short retry intervals. Uses $KAFKA_BOOTSTRAP_SERVERS and "
            "$DATABASE_URL when set, else starts the devstack."
        ),
    )
    demo.add_argument("--backend", choices=["kafka", "postgres"], default="kafka")
    demo.add_argument("--orders", type=int, default=300, metavar="N", help="orders to send")
    demo.add_argument("--broker", choices=["kafka", "tansu"], help="devstack broker to start")
    demo.add_argument("--bootstrap-servers", "-b", metavar="HOST:PORT", help="use this Kafka")
    demo.add_argument("--database-url", metavar="URL", help="use this PostgreSQL")
    demo.add_argument(
        "--schema", default=_DEMO_SCHEMA, help=f"schema of the retry table ({_DEMO_SCHEMA})"
    )
    demo.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS")
    demo.set_defaults(handler=demo_command)


def prepare(args: argparse.Namespace) -> Setup:
    """Find or start the services; name this run's topic and group.

    Raises:
        DevstackError: A service could not be started.
        ServiceUnavailableError: A given service does not answer.
    """
    if args.bootstrap_servers:
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = args.bootstrap_servers
    if args.database_url:
        os.environ["DATABASE_URL"] = args.database_url
    kafka = devstack.start_kafka(args.broker)
    database, hint = None, None
    if args.backend == "postgres":
        service = devstack.start_postgres()
        database = DatabaseConfig.from_url(service.url, schema=args.schema)
        hint = '"$DATABASE_URL"' if service.kind == "external" else shlex.quote(service.url)
    run = secrets.token_hex(3)
    config = Config(
        bootstrap_servers=kafka.bootstrap_servers,
        group=f"demo-{run}",
        topics=[f"demo-orders-{run}"],
        retry_intervals=_INTERVALS,
        retry_backend=args.backend,
        database=database,
        idempotence=kafka.supports_idempotence,
        metrics=False,
        commit_interval=0.2,
        # Short group timeouts: the demo's tiers join at once and should not wait.
        session_timeout_ms=6000,
        rebalance_timeout_ms=4000,
        drain_timeout=2.0,
        connect_attempts=3,
    )
    local = kafka.kind != "external" and (database is None or hint != '"$DATABASE_URL"')
    return Setup(config, args.orders, hint, local)


async def _create_topic(config: Config) -> None:
    admin = await start_admin(config, AIOKafkaTransport())
    try:
        await admin.create_topics([NewTopic(config.topics[0], _PARTITIONS, 1)])
    finally:
        await admin.close()


async def _produce(config: Config, orders: int, tally: Tally) -> None:
    producer = await start_producer(config, AIOKafkaTransport())
    try:
        for first in range(1, orders + 1, 25):
            batch = range(first, min(first + 25, orders + 1))
            sends = []
            for number in batch:
                key, value, headers = order_record(number)
                sends.append(await producer.send(config.topics[0], value, key, headers=headers))
            await asyncio.gather(*sends)
            tally.produced += len(batch)
            await asyncio.sleep(0.1)  # a steady stream rather than one burst
    finally:
        await producer.stop()


async def _watch(setup: Setup, view: View, deadline: float) -> tuple[Snapshot, int]:
    config = setup.config
    tally = Tally(["main", *(f"retry{k}" for k in range(1, len(config.retry_intervals) + 1))])
    shop = Shop()
    await _create_topic(config)
    consumer = Consumer(config, {config.topics[0]: shop}, observer=tally)
    async with consumer:
        producing = asyncio.create_task(_produce(config, setup.orders, tally))
        # A consumer that ended early raises its error when the block exits.
        while time.monotonic() < deadline and consumer.state is ConsumerState.RUNNING:
            snapshot = tally.snapshot(len(shop.handled))
            view.update(snapshot)
            if snapshot.settled >= setup.orders and producing.done():
                break
            await asyncio.sleep(view.interval)
        producing.cancel()
    snapshot = tally.snapshot(len(shop.handled))
    view.update(snapshot, force=True)
    view.say(f"finished in {view.finish():.1f}s")
    async with open_dead_letters(config) as store:
        stored = {entry.key async for entry in store.entries(DeadLetterQuery())}
    return snapshot, len(stored)


def summary(setup: Setup, snapshot: Snapshot, stored: int, want: Expected) -> list[str]:
    """The closing table, what to run next, and the summary line."""
    config = setup.config
    where = (
        config.chain(config.topics[0]).dead_letter
        if config.retry_backend == "kafka"
        else f"{config.database.schema}.{config.database.table}"  # type: ignore[union-attr]
    )
    select = f"-b {config.bootstrap} -g {config.group} -t {config.topics[0]}"
    if config.retry_backend == "postgres":
        select += f" --backend postgres --database-url {setup.database_hint}"
        select += f" --schema {config.database.schema}"  # type: ignore[union-attr]
    lines = ["", *tier_table(snapshot, total=True), ""]
    lines += [
        "What next:",
        f"  kafka-retry dlq list {select}",
        f"  kafka-retry dlq replay {select} --dry-run",
        *(["  kafka-retry dev down    # stop the local services"] if setup.local else []),
        "",
        f"demo: {setup.orders} orders, {snapshot.handled} handled, "
        f"{snapshot.dead_lettered} dead-lettered ({stored} stored in {where})",
    ]
    if (snapshot.handled, snapshot.dead_lettered, stored) != (
        want.handled,
        want.dead_lettered,
        want.dead_lettered,
    ):
        lines.append(
            f"demo: expected {want.handled} handled and {want.dead_lettered} dead-lettered"
        )
    return lines


def demo_command(args: argparse.Namespace) -> int:
    """Run the demo; exit 0 when it ended as designed."""
    configure_logging(args.verbose)
    setup = prepare(args)
    config = setup.config
    intervals = ", ".join(format_duration(s) for s in config.retry_intervals)
    view = View(sys.stdout, setup.orders, live=sys.stdout.isatty())
    view.say(
        f"kafka-retry demo: {setup.orders} orders on {config.topics[0]} ({_PARTITIONS} "
        f"partitions), {config.retry_backend} backend, retries after {intervals}"
    )
    deadline = time.monotonic() + args.timeout
    snapshot, stored = run_async(_watch(setup, view, deadline))
    want = expected(setup.orders, len(config.retry_intervals))
    lines = summary(setup, snapshot, stored, want)
    print("\n".join(lines))
    return 0 if not lines[-1].startswith("demo: expected") else 1
