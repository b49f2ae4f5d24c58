"""``kafka-retry dev up|down|status``: local Kafka and PostgreSQL without Docker."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from kafka_retry import devstack
from kafka_retry._cli._common import Commands, verbosity


def register(commands: Commands) -> None:
    """Add ``dev`` and its actions."""
    dev = commands.add_parser(
        "dev",
        help="start or stop local Kafka and PostgreSQL (no Docker)",
        description=(
            "The devstack: Apache Kafka (when java and mvn exist; else the Tansu broker) and "
            "PostgreSQL, run as local processes. State lives in .devstack of the checkout or "
            "$KAFKA_RETRY_DEVSTACK_DIR."
        ),
    )
    dev.add_argument("--state-dir", type=Path, default=None, help="where pids, data and logs live")
    actions = dev.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = actions.add_parser(
        "up",
        parents=[verbosity()],
        help="start both; print their addresses",
        description='Start both (reusing running ones). For a shell: eval "$(kafka-retry dev up)"',
    )
    add_up_options(up)
    up.set_defaults(handler=up_command)
    down = actions.add_parser("down", parents=[verbosity()], help="stop what the devstack started")
    down.set_defaults(handler=down_command)
    status = actions.add_parser("status", parents=[verbosity()], help="show what runs")
    status.set_defaults(handler=status_command)


#: The largest cluster ``--brokers`` starts: each node is a JVM of up to 512 MB.
MAX_BROKERS = 9


def _broker_count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_BROKERS:
        raise argparse.ArgumentTypeError(f"expected a number from 1 to {MAX_BROKERS}, got {text!r}")
    return int(text)


def add_up_options(up: argparse.ArgumentParser) -> None:
    """The options of ``up``, shared with ``python -m kafka_retry.devstack up``."""
    up.add_argument("--broker", choices=["kafka", "tansu"], help="which broker (default: see dev)")
    up.add_argument(
        "--brokers",
        type=_broker_count,
        default=None,
        metavar="N",
        help="Apache Kafka brokers: 3 starts a KRaft cluster on this machine "
        "(default: as many as run, else 1)",
    )


def up_command(args: argparse.Namespace) -> int:
    """Start the services; print ``KAFKA_BOOTSTRAP_SERVERS=`` and ``DATABASE_URL=`` lines."""
    broker = devstack.start_kafka(args.broker, args.state_dir, brokers=args.brokers)
    database = devstack.start_postgres(args.state_dir)
    print(f"KAFKA_BOOTSTRAP_SERVERS={shlex.quote(broker.bootstrap_servers)}")
    print(f"DATABASE_URL={shlex.quote(database.url)}")
    return 0


def down_command(args: argparse.Namespace) -> int:
    """Stop the services."""
    stopped = devstack.stop_all(args.state_dir)
    print("\n".join(f"stopped {name}" for name in stopped) or "nothing was running")
    return 0


def status_command(args: argparse.Namespace) -> int:
    """Print one line per service, and per node of a Kafka cluster."""
    for state in devstack.status(args.state_dir):
        if state.running:
            print(f"{state.label:<9} running  pid={state.pid}  {state.address}  log={state.log}")
        else:
            print(f"{state.label:<9} stopped")
    return 0
