"""``kafka-retry run module:consumer``: run a Consumer from the user's code until a signal.

The first SIGINT or SIGTERM asks the consumer to stop: it stops fetching,
drains in-flight handlers (``drain_timeout``), commits and closes, and the
command exits 0. A second signal cancels what is still running (those messages
are redelivered later) and exits 130.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import logging
import os
import signal
import sys
from typing import Any

from kafka_retry._cli._common import Commands, run_async, verbosity
from kafka_retry.errors import ConfigError
from kafka_retry.logs import JsonFormatter
from kafka_retry.runtime.consumer import Consumer

log = logging.getLogger("kafka_retry.cli")

_INTERRUPTED = 130


def register(commands: Commands) -> None:
    """Add ``run``."""
    run = commands.add_parser(
        "run",
        parents=[verbosity()],
        help="run a Consumer defined in your code",
        description=(
            "Import MODULE, take its Consumer ATTRIBUTE (or call it, if it is a function "
            "returning one, async or not) and run it. SIGINT or SIGTERM stops it cleanly: "
            "in-flight handlers finish, offsets are committed. A second signal cancels."
        ),
    )
    run.add_argument("target", metavar="MODULE:ATTRIBUTE", help="e.g. myservice.worker:consumer")
    run.add_argument(
        "--log-format", choices=["text", "json"], default="text", help="log lines as text or JSON"
    )
    run.set_defaults(handler=run_command)


def split_target(target: str) -> tuple[str, str]:
    """``("module.path", "attribute.path")`` of ``module.path:attribute.path``.

    Raises:
        ConfigError: The target is not of that form.
    """
    module, sep, attribute = target.partition(":")
    if not sep or not module.strip() or not attribute.strip():
        raise ConfigError(
            "MODULE:ATTRIBUTE", f"expected e.g. myapp.worker:consumer, got {target!r}"
        )
    return module.strip(), attribute.strip()


def import_target(target: str) -> Any:
    """The object ``module:attribute`` names; the current directory is importable.

    Raises:
        ConfigError: The module cannot be imported or has no such attribute.
    """
    module_name, attribute = split_target(target)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError("MODULE", f"cannot import {module_name}: {exc}") from exc
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ConfigError("ATTRIBUTE", f"{module_name} has no {attribute!r}") from None
    return found


async def resolve_consumer(found: Any, target: str) -> Consumer:
    """``found`` if it is a Consumer, else what calling (and awaiting) it returns.

    Raises:
        ConfigError: Neither gives a Consumer.
    """
    if not isinstance(found, Consumer) and callable(found):
        found = found()
        if inspect.isawaitable(found):
            found = await found
    if not isinstance(found, Consumer):
        raise ConfigError(
            "ATTRIBUTE", f"{target} is not a kafka_retry.Consumer (got {type(found).__name__})"
        )
    return found


class _Signals:
    """The first signal asks the consumer to stop; the next one cancels ``task``."""

    def __init__(self, consumer: Consumer, task: asyncio.Task[Any] | None) -> None:
        self._consumer = consumer
        self._task = task
        self._asked = False

    def __call__(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if not self._asked:
            self._asked = True
            log.info("%s: stopping; in-flight handlers finish (again to cancel them)", name)
            self._consumer.request_stop()
        elif self._task is not None:
            log.warning("%s again: cancelling in-flight handlers", name)
            self._task.cancel()


async def serve(consumer: Consumer) -> int:
    """Run ``consumer`` until SIGINT/SIGTERM and its drain; return the exit code."""
    loop = asyncio.get_running_loop()
    handler = _Signals(consumer, asyncio.current_task())
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, handler, signum)
    ready = asyncio.create_task(_announce(consumer))
    try:
        await consumer.run()
    except asyncio.CancelledError:
        return _INTERRUPTED
    finally:
        ready.cancel()
        for signum in signals:
            loop.remove_signal_handler(signum)
    log.info("consumer %s stopped cleanly", consumer.config.group)
    return 0


async def _announce(consumer: Consumer) -> None:
    try:
        await consumer.wait_ready()
    except Exception:
        return  # run() reports why it ended
    topics = ", ".join(consumer.config.topics)
    log.info("consumer %s running on %s; Ctrl-C to stop", consumer.config.group, topics)


def _logging(args: argparse.Namespace) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if args.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if args.verbose >= 2 else logging.INFO)
    # aiokafka narrates every rebalance at INFO; a service log wants its warnings only.
    logging.getLogger("aiokafka").setLevel(logging.INFO if args.verbose else logging.WARNING)


def run_command(args: argparse.Namespace) -> int:
    """Import, run until signalled, exit 0 after a clean drain."""
    _logging(args)
    found = import_target(args.target)

    async def main() -> int:
        return await serve(await resolve_consumer(found, args.target))

    return run_async(main())
