"""``kafka-retry topics plan|create``: each main topic's chain, and creating it."""

from __future__ import annotations

import argparse
from typing import Any

from kafka_retry._cli._common import (
    Commands,
    database_options,
    json_option,
    kafka_options,
    load_config,
    load_database,
    print_json,
    run_async,
    verbosity,
)
from kafka_retry._cli._output import format_duration, table
from kafka_retry._kafka import (
    AIOKafkaTransport,
    ensure_topics,
    partition_counts,
    start_admin,
)
from kafka_retry.config import Config, DatabaseConfig
from kafka_retry.errors import SetupError


def register(commands: Commands) -> None:
    """Add ``topics`` and its actions."""
    topics = commands.add_parser(
        "topics",
        help="show or create the retry and dead-letter topics",
        description="Show each main topic's chain of retry and dead-letter topics, or create it.",
    )
    actions = topics.add_subparsers(dest="action", required=True, metavar="ACTION")
    plan = actions.add_parser(
        "plan",
        parents=[verbosity()],
        help="show each main topic's chain and its delays (no connection)",
        description="Show each main topic's chain: retry tiers with their delays, dead letter.",
    )
    kafka_options(plan)
    database_options(plan)
    json_option(plan)
    plan.set_defaults(handler=plan_command)
    create = actions.add_parser(
        "create",
        parents=[verbosity()],
        help="create the missing retry and dead-letter topics (idempotent)",
        description=(
            "Create every missing retry and dead-letter topic with as many partitions as "
            "its main topic. Topics that exist are left alone, so running it again is safe."
        ),
    )
    kafka_options(create)
    create.add_argument(
        "--replication-factor",
        type=int,
        metavar="N",
        help="replicas per new topic; -1 for the broker's default (KAFKA_REPLICATION_FACTOR; 1)",
    )
    create.set_defaults(handler=create_command)


def chain_plan(config: Config) -> list[dict[str, Any]]:
    """Each main topic's tiers: name, where it lives, delay."""
    plans = []
    table_name = None
    if config.retry_backend == "postgres" and config.database is not None:
        table_name = config.database.qualified_table
    for topic in config.topics:
        chain = config.chain(topic)
        tiers: list[dict[str, Any]] = [{"tier": "main", "topic": chain.main, "delay": None}]
        for number, (name, delay) in enumerate(
            zip(chain.retries, config.retry_intervals, strict=True), start=1
        ):
            where = {"table": table_name} if table_name else {"topic": name}
            tiers.append({"tier": f"retry{number}", **where, "delay": delay})
        last = {"table": table_name} if table_name else {"topic": chain.dead_letter}
        tiers.append({"tier": "dead letter", **last, "delay": None})
        plans.append({"topic": topic, "group": config.group, "tiers": tiers})
    return plans


def plan_lines(config: Config) -> list[str]:
    """The plan as text: one block per main topic."""
    lines = [f"group {config.group}, {config.retry_backend} backend"]
    for plan in chain_plan(config):
        rows = []
        for tier in plan["tiers"]:
            where = tier.get("topic") or f"table {tier['table']}"
            delay = "" if tier["delay"] is None else f"after {format_duration(tier['delay'])}"
            rows.append([tier["tier"], where, delay])
        lines.append("")
        lines.extend(table(["TIER", "WHERE", "DELAY"], rows))
    return lines


def plan_command(args: argparse.Namespace) -> int:
    """Print the plan."""
    config = load_config(args, database=load_database(args, required=False) or DatabaseConfig())
    if args.json:
        print_json(chain_plan(config))
    else:
        print("\n".join(plan_lines(config)))
    return 0


def create_command(args: argparse.Namespace) -> int:
    """Create the missing topics and say what was created."""
    config = load_config(args)
    if config.retry_backend == "postgres":
        print("postgres backend: retries and dead letters live in the table; no topics to create")
        return 0
    for line in run_async(create_topics(config)):
        print(line)
    return 0


async def create_topics(config: Config) -> list[str]:
    """Create the chains' missing topics; one line per topic saying what happened.

    Raises:
        SetupError: A main topic does not exist, or the broker refused a creation.
        ServiceUnavailableError: Kafka is unreachable.
    """
    admin = await start_admin(config, AIOKafkaTransport())
    try:
        mains = await partition_counts(admin, list(config.topics))
        unknown = [topic for topic in config.topics if topic not in mains]
        if unknown:
            raise SetupError(f"unknown topic {', '.join(unknown)}: not found at {config.bootstrap}")
        wanted = [name for topic in config.topics for name in config.topic_chain(topic)[1:]]
        before = await partition_counts(admin, wanted)
        await ensure_topics(admin, config)
    finally:
        await admin.close()
    lines = []
    for topic in config.topics:
        for name in config.topic_chain(topic)[1:]:
            verb = "exists " if name in before else "created"
            lines.append(f"{verb}  {name}  ({mains[topic]} partitions)")
    return lines
