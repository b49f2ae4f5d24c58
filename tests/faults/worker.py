"""A consumer process for the fault suite: ``python -m tests.faults.worker --help``.

It runs one :class:`~kafka_retry.Consumer` on one topic whose handler follows a
plan of :mod:`tests.faults.plan`, and appends one fsync'd line per handler call
to ``<ledger-dir>/ledger-<pid>.log``: outside this process, so a SIGKILL loses
nothing that was recorded. A success is recorded after the handler's work
succeeded and before it returns, a failure before it raises. SIGTERM asks the
consumer to stop cleanly; the process then exits 0. An interruption raised by
a handler ends the process with that exception, as it would end a real one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from kafka_retry import Config, Consumer, DatabaseConfig, Message, NonRetryableError
from tests.faults.plan import (
    INTERVALS,
    PLANS,
    Act,
    LedgerLine,
    behaviour,
    message_digest,
    message_id,
)

# Far past any handler timeout the suite uses: only the timeout ends it.
_HANG = 60.0


class Abort(BaseException):
    """A BaseException that is neither KeyboardInterrupt nor SystemExit."""


class HandlerFailed(Exception):
    """The planned, retryable failure."""


class Ledger:
    """An append-only file with one fsync'd line per handler call (safe from many threads)."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def append(self, line: LedgerLine) -> None:
        """Write ``line`` and wait until it is on disk."""
        os.write(self._fd, line.encode())
        os.fsync(self._fd)


class PlannedHandler:
    """The handler: does what the plan says for the message's id and attempt.

    Args:
        plan: The plan's name.
        ledger: Where each call is recorded.
        markers: Directory of the once-only interruptions already raised.
        pace: Seconds each call works (awaits) before its outcome.
    """

    def __init__(self, plan: str, ledger: Ledger, markers: Path, pace: float = 0.0) -> None:
        self._plan = plan
        self._ledger = ledger
        self._markers = markers
        self._pace = pace

    async def __call__(self, message: Message) -> object:
        fid = message_id(message.headers)
        act = Act.OK if fid is None else behaviour(self._plan, fid).act(message.attempt)
        if act in (Act.INTERRUPT, Act.ABORT) and not self._first_time(fid, message.attempt):
            act = Act.OK
        if self._pace:
            await asyncio.sleep(self._pace)
        await self._record(-1 if fid is None else fid, message, act.value)
        return await self._perform(act, fid)

    def _first_time(self, fid: int | None, attempt: int) -> bool:
        try:
            os.close(os.open(self._markers / f"{fid}-{attempt}", os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return False
        return True

    async def _record(self, fid: int, message: Message, outcome: str) -> None:
        line = LedgerLine(fid, message.attempt, outcome, message_digest(message), time.time())
        # In a thread: a blocking fsync would hold the event loop, which the
        # consumer needs meanwhile (polls, commits, heartbeats).
        await asyncio.to_thread(self._ledger.append, line)

    async def _perform(self, act: Act, fid: int | None) -> object:
        if act is Act.OK:
            return None
        if act is Act.VALUE:
            return f"handled {fid}"
        if act is Act.FAIL:
            raise HandlerFailed(f"planned failure of {fid}")
        if act is Act.FATAL:
            raise NonRetryableError(f"planned non-retryable failure of {fid}")
        if act is Act.HANG:
            await asyncio.sleep(_HANG)
            return None
        if act is Act.CANCEL:
            inner = asyncio.create_task(asyncio.sleep(_HANG))
            inner.cancel()
            await inner
            return None
        if act is Act.INTERRUPT:
            raise KeyboardInterrupt(f"planned interrupt by {fid}")
        raise Abort(f"planned abort by {fid}")


def config_from(args: argparse.Namespace) -> Config:
    """The consumer's settings: short intervals and timeouts, so faults heal quickly."""
    database = None
    if args.backend == "postgres":
        database = DatabaseConfig.from_url(args.database_url, schema=args.schema)
    return Config(
        bootstrap_servers=args.bootstrap,
        group=args.group,
        topics=[args.topic],
        retry_intervals=INTERVALS,
        retry_backend=args.backend,
        database=database,
        ordered_retries=args.plan == "ordered",
        handler_timeout=args.handler_timeout,
        drain_timeout=args.drain_timeout,
        replication_factor=args.replication_factor,
        commit_interval=0.2,
        # Back-pressure soon: a tier holds ~100 records per partition, not the whole
        # topic, so that a broker outage stalls it and its recovery can be seen.
        max_in_flight=100,
        # Evict a killed member quickly; keep the rebalance bound above the drain.
        session_timeout_ms=args.session_timeout_ms,
        retry_lease=5.0,
        connect_attempts=60,
        connect_interval=0.5,
        metrics=False,
        client_id=f"faults-{os.getpid()}",
        # A restarted worker is the same instance: it fences the killed one.
        exactly_once=args.exactly_once,
        instance_id=args.instance_id,
    )


async def run(args: argparse.Namespace) -> None:
    """Consume until SIGTERM (clean stop) or until a handler's interruption ends it.

    ``<ledger-dir>/ready-<pid>`` appears once every tier has its assignment.
    """
    ledger_dir = Path(args.ledger_dir)
    ledger = Ledger(ledger_dir / f"ledger-{os.getpid()}.log")
    markers = ledger_dir / "markers"
    markers.mkdir(exist_ok=True)
    handler = PlannedHandler(args.plan, ledger, markers, args.pace)
    consumer = Consumer(config_from(args), {args.topic: handler})
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, consumer.request_stop)
    running = asyncio.ensure_future(consumer.run())
    with contextlib.suppress(Exception):  # then awaiting it raises what ended it
        await consumer.wait_ready()
        (ledger_dir / f"ready-{os.getpid()}").touch()
    await running


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m tests.faults.worker")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--backend", choices=["kafka", "postgres"], default="kafka")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--schema", default="public")
    parser.add_argument("--ledger-dir", required=True)
    parser.add_argument("--plan", choices=PLANS, default="standard")
    parser.add_argument("--handler-timeout", type=float, default=None)
    parser.add_argument("--drain-timeout", type=float, default=5.0)
    parser.add_argument("--pace", type=float, default=0.0)
    parser.add_argument("--replication-factor", type=int, default=1)
    parser.add_argument("--session-timeout-ms", type=int, default=6000)
    parser.add_argument("--exactly-once", action="store_true")
    parser.add_argument("--instance-id", default=None)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the worker; return 0 after a clean stop."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s %(message)s"
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    # `kill -USR1 <pid>` prints every thread's stack: how to see where a stuck worker is.
    faulthandler.register(signal.SIGUSR1)
    asyncio.run(run(parse(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
