"""The ``python -m kafka_retry.devstack`` command line: ``up``, ``down``, ``status``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from kafka_retry._cli import dev
from kafka_retry._cli._common import Parser
from kafka_retry.errors import KafkaRetryError

# The same commands as ``kafka-retry dev``.
_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "up": dev.up_command,
    "down": dev.down_command,
    "status": dev.status_command,
}


def _parser() -> argparse.ArgumentParser:
    # Parser: a usage error is one line, as in ``kafka-retry dev``.
    parser = Parser(
        prog="python -m kafka_retry.devstack",
        description="Start and stop local Kafka and PostgreSQL (no Docker).",
    )
    parser.add_argument(
        "--state-dir", type=Path, default=None, help="default: .devstack in the checkout"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start a broker and PostgreSQL; print their addresses")
    dev.add_up_options(up)
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
