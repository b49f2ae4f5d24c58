"""What every command shares: the parser class, connection options, settings, output."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeAlias, TypeVar, overload

from kafka_retry.config import Config, DatabaseConfig
from kafka_retry.errors import ConfigError

T = TypeVar("T")

#: A command: parsed arguments in, exit code out.
Command = Callable[[argparse.Namespace], int]

DEFAULT_BOOTSTRAP = "localhost:9092"
# An operator waits for an answer: fail fast on a wrong address, unlike a service.
_CLI_CONNECT_ATTEMPTS = "2"
_CLI_CONNECT_INTERVAL = 0.5

# option destination -> the environment variable it stands for
_VARIABLES = {
    "bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
    "group": "KAFKA_GROUP",
    "topics": "KAFKA_TOPICS",
    "retry_intervals": "KAFKA_RETRY_INTERVALS",
    "backend": "KAFKA_RETRY_BACKEND",
    "replication_factor": "KAFKA_REPLICATION_FACTOR",
    "database_url": "DATABASE_URL",
    "schema": "DATABASE_SCHEMA",
    "table": "DATABASE_TABLE",
}
_FLAGS = {variable: "--" + dest.replace("_", "-") for dest, variable in _VARIABLES.items()}
_FLAGS["KAFKA_TOPICS"] = "--topic"


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``prog: error: ... (see --help)``."""

    def error(self, message: str) -> Any:  # argparse's signature says NoReturn
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


#: The ``add_subparsers`` result of a :class:`Parser` (generic only to type checkers).
Commands: TypeAlias = "argparse._SubParsersAction[Parser]"


def verbosity() -> Parser:
    """A parent parser with ``-v/--verbose``, for every command."""
    parent = Parser(add_help=False)
    parent.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log more (-v: warnings, -vv: info and tracebacks)",
    )
    return parent


def kafka_options(
    parser: argparse.ArgumentParser, *, topics: bool = True, group_flag: str = "--group"
) -> None:
    """Add the Kafka connection and chain options; each defaults to its variable.

    ``group_flag`` is the long option of the consumer group, for a command whose
    ``--group`` means something else (``dlq replay --group FINGERPRINT``).
    """
    options = parser.add_argument_group(
        "consumer settings", "Each option defaults to the variable named, as Config.from_env()."
    )
    options.add_argument(
        "--bootstrap-servers",
        "-b",
        metavar="HOST:PORT",
        help=f"Kafka brokers, comma-separated (KAFKA_BOOTSTRAP_SERVERS; else {DEFAULT_BOOTSTRAP})",
    )
    options.add_argument(group_flag, "-g", dest="group", help="the consumer group (KAFKA_GROUP)")
    if topics:
        options.add_argument(
            "--topic",
            "-t",
            action="append",
            dest="topics",
            metavar="TOPIC",
            help="a main topic; repeat it or separate with commas (KAFKA_TOPICS)",
        )
    options.add_argument(
        "--retry-intervals",
        metavar="SECONDS",
        help="retry delays, comma-separated, e.g. 60,300 (KAFKA_RETRY_INTERVALS)",
    )
    options.add_argument(
        "--backend",
        choices=["kafka", "postgres"],
        help="where retries and dead letters live (KAFKA_RETRY_BACKEND; else kafka)",
    )


def database_options(parser: argparse.ArgumentParser) -> None:
    """Add the PostgreSQL options; each defaults to its variable."""
    options = parser.add_argument_group(
        "database settings", "For the postgres backend; DATABASE_HOST and the rest work too."
    )
    options.add_argument(
        "--database-url",
        metavar="URL",
        help="postgresql://user:password@host:port/database (DATABASE_URL)",
    )
    options.add_argument("--schema", help="schema of the retry table (DATABASE_SCHEMA; public)")
    options.add_argument("--table", help="the retry table (DATABASE_TABLE; kafka_consumer_retries)")


def json_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--json``."""
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def environment(args: argparse.Namespace, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment with the given options written over their variables."""
    env = dict(os.environ if base is None else base)
    for dest, variable in _VARIABLES.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        env[variable] = ",".join(value) if isinstance(value, list) else str(value)
    if not env.get("KAFKA_BOOTSTRAP_SERVERS", "").strip():
        env["KAFKA_BOOTSTRAP_SERVERS"] = DEFAULT_BOOTSTRAP
    env.setdefault("KAFKA_CONNECT_ATTEMPTS", _CLI_CONNECT_ATTEMPTS)
    return env


def load_config(args: argparse.Namespace, **overrides: Any) -> Config:
    """The :class:`Config` of the options and the environment; metrics off.

    Raises:
        ConfigError: A setting is missing or invalid; says which option sets it.
    """
    env = environment(args)
    overrides.setdefault("metrics", False)
    overrides.setdefault("connect_interval", _CLI_CONNECT_INTERVAL)
    try:
        return Config.from_env(env, **overrides)
    except ConfigError as exc:
        raise explained(exc) from None


@overload
def load_database(args: argparse.Namespace) -> DatabaseConfig: ...


@overload
def load_database(args: argparse.Namespace, *, required: bool) -> DatabaseConfig | None: ...


def load_database(args: argparse.Namespace, *, required: bool = True) -> DatabaseConfig | None:
    """The :class:`DatabaseConfig` of the options and the environment.

    Raises:
        ConfigError: Invalid settings, or none when ``required``.
    """
    try:
        database = DatabaseConfig.from_env(environment(args))
    except ConfigError as exc:
        raise explained(exc) from None
    if database is None and required:
        raise explained(ConfigError("database", "missing"))
    return database


def explained(error: ConfigError) -> ConfigError:
    """``error`` reworded to name the option that sets the field as well as the variable."""
    if error.field == "database":
        return ConfigError(
            "--database-url",
            "no database settings: pass --database-url or set DATABASE_URL (or DATABASE_HOST)",
        )
    flag = _FLAGS.get(error.field)
    if flag is not None and error.reason == "is not set":
        return ConfigError(flag, f"missing: pass {flag} or set {error.field}")
    return error


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on a fresh event loop."""
    return asyncio.run(coroutine)


def print_json(value: Any) -> None:
    """``value`` as indented JSON on stdout."""
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def configure_logging(verbose: int, *, quiet_level: int = logging.CRITICAL) -> None:
    """Log to stderr: nothing below ``quiet_level`` unless ``-v`` (warnings) or ``-vv`` (info)."""
    level = {0: quiet_level, 1: logging.WARNING}.get(verbose, logging.INFO)
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger().setLevel(level)
