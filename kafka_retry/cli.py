"""The ``kafka-retry`` command (also ``python -m kafka_retry``): operate the retry pipeline.

Commands: ``topics plan|create``, ``db migrate|status``,
``dlq list|show|groups|replay|purge``, ``console``, ``run MODULE:ATTRIBUTE``,
``dev up|down|status`` and ``demo``; ``kafka-retry COMMAND --help`` describes
each. Settings come from options or the environment variables of
:meth:`kafka_retry.Config.from_env`.

Errors are one line on stderr and a non-zero exit: 1 when the operation failed,
2 for a usage error, 130 when interrupted. ``-vv`` adds the traceback of an
unexpected error. Signal handling lives here (``run``), not in the library.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Sequence
from importlib import metadata

import asyncpg
from aiokafka.errors import KafkaError

from kafka_retry._cli import console, db, demo, dev, dlq, run, topics
from kafka_retry._cli._common import Parser, configure_logging
from kafka_retry.errors import KafkaRetryError

__all__ = ["build_parser", "main"]

_PROG = "kafka-retry"
_FAILED = 1
_INTERRUPTED = 130


def build_parser() -> Parser:
    """The parser of every command."""
    parser = Parser(
        prog=_PROG,
        description=(
            "Operate kafka-retry: inspect topic chains, migrate the retry table, list, "
            "group, replay and purge dead letters (or serve their web console), run a "
            "consumer, start local services, run a demo."
        ),
        epilog="Settings: options, else KAFKA_* and DATABASE_* variables (Config.from_env()).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (topics, db, dlq, console, run, dev, demo):
        module.register(commands)
    return parser


def _version() -> str:
    try:
        return metadata.version("kafka-retry")
    except metadata.PackageNotFoundError:
        return "unknown"


def _fail(message: str) -> int:
    print(f"{_PROG}: error: {message}", file=sys.stderr)
    return _FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command of ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    args = build_parser().parse_args(argv)
    verbose: int = getattr(args, "verbose", 0)
    if args.command not in ("run", "demo"):
        configure_logging(verbose)
    try:
        return int(args.handler(args))
    except KafkaRetryError as exc:
        return _fail(_one_line(str(exc)))
    except KeyboardInterrupt:
        print(f"{_PROG}: interrupted", file=sys.stderr)
        return _INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`kafka-retry dlq list | head`): nothing to say, and
        # Python must not complain about flushing stdout on exit either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return _FAILED
    except (KafkaError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        # Foreign errors that escaped a translation: still one line, with their kind.
        return _fail(_one_line(f"{type(exc).__name__}: {exc}"))
    except Exception as exc:
        if verbose >= 2:
            traceback.print_exc()
        logging.getLogger("kafka_retry.cli").debug("unexpected error", exc_info=True)
        return _fail(f"unexpected {type(exc).__name__}: {_one_line(str(exc))} (-vv for details)")


def _one_line(text: str) -> str:
    return " ".join(text.split())
