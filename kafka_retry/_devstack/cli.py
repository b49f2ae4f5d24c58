"""The ``python -m kafka_retry.devstack`` command line: ``up``, ``down``, ``status``."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from kafka_retry import devstack
from kafka_retry.errors import KafkaRetryError


def _cmd_up(args: argparse.Namespace) -> int:
    broker = devstack.start_kafka(args.broker, args.state_dir)
    database = devstack.start_postgres(args.state_dir)
    print(f"KAFKA_BOOTSTRAP_SERVERS={shlex.quote(broker.bootstrap_servers)}")
    print(f"DATABASE_URL={shlex.quote(database.url)}")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    stopped = devstack.stop_all(args.state_dir)
    for name in stopped:
        print(f"stopped {name}")
    if not stopped:
        print("nothing was running")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    for state in devstack.status(args.state_dir):
        if state.running:
            print(f"{state.name:<9} running  pid={state.pid}  {state.address}  log={state.log}")
        else:
            print(f"{state.name:<9} stopped")
    return 0


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "up": _cmd_up,
    "down": _cmd_down,
    "status": _cmd_status,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kafka_retry.devstack",
        description="Start and stop local Kafka and PostgreSQL (no Docker).",
    )
    parser.add_argument(
        "--state-dir", type=Path, default=None, help="default: .devstack in the checkout"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start a broker and PostgreSQL; print their addresses")
    up.add_argument("--broker", choices=["kafka", "tansu"], default=None)
    commands.add_parser("down", help="stop every service started from the state directory")
    commands.add_parser("status", help="show which services run")
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the command and return the exit code."""
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (KafkaRetryError, OSError) as exc:
        print(f"devstack: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
