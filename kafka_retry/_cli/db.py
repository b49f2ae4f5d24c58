"""``kafka-retry db migrate|status``: the retry table of the postgres backend."""

from __future__ import annotations

import argparse
from typing import Any

from kafka_retry._cli._common import (
    Commands,
    database_options,
    json_option,
    load_database,
    print_json,
    run_async,
    verbosity,
)
from kafka_retry._cli._output import table
from kafka_retry.config import DatabaseConfig
from kafka_retry.errors import SetupError
from kafka_retry.retry.table import (
    TopicCounts,
    apply_migrations,
    connect,
    pending_migrations,
    table_exists,
    topic_counts,
)


def register(commands: Commands) -> None:
    """Add ``db`` and its actions."""
    db = commands.add_parser(
        "db",
        help="migrate or inspect the retry table (postgres backend)",
        description="Migrate or inspect the retry table of the postgres backend.",
    )
    actions = db.add_subparsers(dest="action", required=True, metavar="ACTION")
    migrate = actions.add_parser(
        "migrate",
        parents=[verbosity()],
        help="apply pending migrations (safe while consumers run)",
        description=(
            "Create the retry table or bring it up to date. Takes the same advisory lock "
            "as starting consumers, so it is safe to run at any time, and idempotent."
        ),
    )
    database_options(migrate)
    migrate.set_defaults(handler=migrate_command)
    status = actions.add_parser(
        "status",
        parents=[verbosity()],
        help="count rows per group, topic, tier and state",
        description=(
            "Count the retry table's rows: waiting (ordered retries), pending per retry tier, "
            "succeeded (kept an hour), "
            "dead-lettered and replayed, per consumer group and main topic."
        ),
    )
    database_options(status)
    status.add_argument("--group", "-g", help="only this consumer group (default: all)")
    json_option(status)
    status.set_defaults(handler=status_command)


def migrate_command(args: argparse.Namespace) -> int:
    """Apply the pending migrations and say which."""
    database = load_database(args)
    applied = run_async(apply_migrations(database, connect_attempts=2, connect_interval=0.5))
    where = database.qualified_table
    if applied:
        print(f"applied {', '.join(applied)} to {where}")
    else:
        print(f"{where} is up to date")
    return 0


async def read_status(
    database: DatabaseConfig, group: str | None
) -> tuple[list[TopicCounts], list[str]]:
    """The counts and the pending migrations.

    Raises:
        SetupError: The table does not exist.
        ServiceUnavailableError: PostgreSQL is unreachable.
    """
    conn = await connect(database, attempts=2, interval=0.5)
    try:
        if not await table_exists(conn, database):
            raise SetupError(
                f"no retry table {database.qualified_table}: run `kafka-retry db migrate`"
            )
        return await topic_counts(conn, database, group), await pending_migrations(conn, database)
    finally:
        await conn.close()


def status_rows(counts: list[TopicCounts]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the status table: one column per retry tier seen."""
    tiers = max((max(c.pending, default=0) for c in counts), default=0)
    headers = ["GROUP", "TOPIC", "WAITING", *(f"RETRY{k}" for k in range(1, tiers + 1))]
    headers += ["SUCCEEDED", "DEAD-LETTERED", "REPLAYED"]
    rows = []
    for c in counts:
        # Claimed waiting rows are pending at attempts 0: still waiting, as the reader sees it.
        waiting = str(c.waiting + c.pending.get(0, 0))
        pending = [str(c.pending.get(k, 0)) for k in range(1, tiers + 1)]
        rows.append(
            [
                c.group,
                c.topic,
                waiting,
                *pending,
                str(c.succeeded),
                str(c.dead_lettered),
                str(c.replayed),
            ]
        )
    return headers, rows


def status_json(counts: list[TopicCounts], pending: list[str]) -> dict[str, Any]:
    """The status as a JSON-ready object."""
    return {
        "pending_migrations": pending,
        "topics": [
            {
                "group": c.group,
                "topic": c.topic,
                "waiting": c.waiting,
                "pending": {str(k): n for k, n in sorted(c.pending.items())},
                "succeeded": c.succeeded,
                "dead_lettered": c.dead_lettered,
                "replayed": c.replayed,
            }
            for c in counts
        ],
    }


def status_command(args: argparse.Namespace) -> int:
    """Print the counts (and a reminder when migrations are pending)."""
    database = load_database(args)
    counts, pending = run_async(read_status(database, args.group))
    if args.json:
        print_json(status_json(counts, pending))
        return 0
    if pending:
        print(f"pending migrations: {', '.join(pending)} (run `kafka-retry db migrate`)")
    if not counts:
        print(f"{database.qualified_table} has no rows")
        return 0
    headers, rows = status_rows(counts)
    print("\n".join(table(headers, rows, right=range(2, len(headers)))))
    return 0
