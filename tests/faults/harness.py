"""One fault run: produce the messages, run workers, inject faults, settle, judge, report.

Faults are placed by progress, not by the clock: "when 37 % of the ids have
reached a handler", so that they land mid-run however fast the machine is.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import attrs

from kafka_retry import Config, DatabaseConfig, TopicChain
from kafka_retry.retry.kafka import retry_group_id
from tests.faults import stores
from tests.faults.ledger import DeadLetter, LedgerView, Verdict, judge
from tests.faults.plan import INTERVALS, behaviour, records
from tests.faults.services import Services, Worker

_POLL = 0.05
_SETTLE_POLL = 0.5
# A clean stop drains for drain_timeout, then commits and leaves the group.
_STOP_GRACE = 30.0


@attrs.define
class Fault:
    """A fault injected into a run.

    Attributes:
        what: What was done, e.g. ``kill``.
        over: When it was over: the worker restarted, the service back.
        recovery: Seconds from ``over`` until the consumer made progress again.
    """

    what: str
    over: float
    recovery: float = math.inf


class FaultRun:
    """Messages of one plan on a fresh topic (and retry table), and the workers consuming them.

    Use as ``async with FaultRun(...) as run:``; leaving the block kills
    whatever worker still runs.

    Args:
        services: The suite's Kafka and PostgreSQL.
        directory: An empty directory for the ledgers and worker logs.
        scenario: The name in the report.
        backend: ``kafka`` or ``postgres``.
        plan: The plan of :mod:`tests.faults.plan`.
        count: How many messages (the poison plan has a fixed set).
        partitions: Partitions of the main topic.
        handler_timeout: The workers' handler timeout, if any.
        drain_timeout: The workers' drain timeout.
        pace: Seconds each handler call works before its outcome.
        padding: Bytes added to each value (the standard plan), so that the
            consumer cannot hold the whole topic in its fetch buffers.
        replication_factor: Copies of the main topic and of the retry and
            dead-letter topics the workers create.
        session_timeout_ms: The workers' group session timeout.
        exactly_once: The workers' ``exactly_once`` (Kafka backend); the
            run's topics are then read with ``read_committed``.
    """

    def __init__(
        self,
        services: Services,
        directory: Path,
        *,
        scenario: str,
        backend: str,
        plan: str = "standard",
        count: int = 0,
        partitions: int = 6,
        handler_timeout: float | None = None,
        drain_timeout: float = 5.0,
        pace: float = 0.0,
        padding: int = 64,
        replication_factor: int = 1,
        session_timeout_ms: int = 6000,
        exactly_once: bool = False,
    ) -> None:
        self.services = services
        self.exactly_once = exactly_once
        self._instances: dict[int, str] = {}
        self.scenario = scenario
        self.backend = backend
        self.plan = plan
        self._partitions = partitions
        self._handler_timeout = handler_timeout
        self._drain_timeout = drain_timeout
        self._pace = pace
        self.replication_factor = replication_factor
        self._session_timeout_ms = session_timeout_ms
        suffix = uuid.uuid4().hex[:8]
        self.group = f"faults-{suffix}"
        self.topic = f"faults-{suffix}"
        self._schema = f"faults_{suffix}"
        self._directory = directory
        (directory / "ledger").mkdir(parents=True)
        self.ledger = LedgerView(directory / "ledger")
        self.ledger.follow(plan)
        self.records = records(plan, count, int(time.time() * 1000), padding)
        self.workers: list[Worker] = []
        self.faults: list[Fault] = []
        self.started = 0.0

    @property
    def count(self) -> int:
        """How many messages the run produced."""
        return len(self.records)

    @property
    def database(self) -> DatabaseConfig:
        """Where the retry table lives (postgres backend)."""
        return DatabaseConfig.from_url(self.services.database_url, schema=self._schema)

    async def __aenter__(self) -> FaultRun:
        bootstrap = self.services.bootstrap
        await stores.create_topic(bootstrap, self.topic, self._partitions, self.replication_factor)
        if self.backend == "postgres":
            await stores.create_schema(self.services.database_url, self._schema)
        await stores.produce(bootstrap, self.topic, self.records)
        self.started = time.time()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for worker in self.workers:
            worker.kill()

    def start_worker(self) -> Worker:
        """Start one more worker process."""
        args = [
            "--bootstrap",
            self.services.bootstrap,
            "--group",
            self.group,
            "--topic",
            self.topic,
            "--backend",
            self.backend,
            "--ledger-dir",
            str(self._directory / "ledger"),
            "--plan",
            self.plan,
            "--drain-timeout",
            str(self._drain_timeout),
            "--pace",
            str(self._pace),
            "--replication-factor",
            str(self.replication_factor),
            "--session-timeout-ms",
            str(self._session_timeout_ms),
        ]
        if self.backend == "postgres":
            args += ["--database-url", self.services.database_url, "--schema", self._schema]
        if self._handler_timeout is not None:
            args += ["--handler-timeout", str(self._handler_timeout)]
        if self.exactly_once:
            args += ["--exactly-once", "--instance-id", self._free_instance()]
        log = self._directory / f"worker-{len(self.workers) + 1}.log"
        worker = Worker(args, log, self._directory / "ledger")
        self.workers.append(worker)
        if self.exactly_once:
            self._instances[worker.pid] = args[-1]
        return worker

    def _free_instance(self) -> str:
        """The first instance id no live worker has: a restart takes the killed one's."""
        taken = {self._instances.get(worker.pid) for worker in self.alive}
        slot = next(n for n in range(len(self.workers) + 1) if f"w{n}" not in taken)
        return f"w{slot}"

    async def join(self) -> Worker:
        """Start one more worker and wait until its consumer is ready."""
        worker = self.start_worker()
        await self.wait_for(lambda: worker.ready, 60.0, "the new member to be ready")
        return worker

    @property
    def alive(self) -> list[Worker]:
        """The workers still running."""
        return [worker for worker in self.workers if worker.alive]

    async def wait_for(self, condition: Callable[[], bool], within: float, what: str) -> None:
        """Poll the ledger until ``condition()`` holds.

        Raises:
            AssertionError: ``within`` seconds passed, or every worker died.
        """
        deadline = time.monotonic() + within
        while True:
            self.ledger.refresh()
            if condition():
                return
            if self.workers and not self.alive:
                raise AssertionError(f"every worker died waiting for {what}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {within:g}s:\n{self.tail()}")
            await asyncio.sleep(_POLL)

    async def wait_progress(self, fraction: float, within: float = 120.0) -> None:
        """Wait until ``fraction`` of the ids have reached a handler at least once."""
        target = math.ceil(fraction * self.count)
        await self.wait_for(
            lambda: len(self.ledger.seen) >= target, within, f"progress to {fraction:.0%}"
        )

    async def restart(self, worker: Worker) -> Worker:
        """SIGKILL ``worker``, start another, and wait until it has handled something."""
        worker.kill()
        new = self.start_worker()
        self.faults.append(Fault("kill", time.time()))
        await self.wait_for(lambda: self.ledger.per_pid[new.pid] > 0, 120.0, "restarted worker")
        return new

    async def stop(self, worker: Worker) -> None:
        """Stop ``worker`` cleanly and wait for it.

        Raises:
            AssertionError: It did not exit 0 within the grace period.
        """
        worker.terminate()
        await asyncio.to_thread(worker.wait, _STOP_GRACE)
        assert worker.returncode == 0, f"worker exited {worker.returncode}:\n{self.tail(worker)}"

    async def stop_all(self) -> None:
        """Stop every running worker cleanly, all at once."""
        await asyncio.gather(*(self.stop(worker) for worker in self.alive))
        self.ledger.refresh()

    def _complete_in_ledger(self) -> bool:
        for record in self.records:
            if behaviour(self.plan, record.fid).dead_letter:
                if record.fid not in self.ledger.finally_failed:
                    return False
            elif record.fid not in self.ledger.succeeded:
                return False
        return True

    @property
    def chain(self) -> TopicChain:
        """The topics the workers' failures move through (Kafka backend)."""
        return Config(
            bootstrap_servers=self.services.bootstrap,
            group=self.group,
            topics=[self.topic],
            retry_intervals=INTERVALS,
        ).chain(self.topic)

    @property
    def groups(self) -> list[tuple[str, str]]:
        """``(consumer group, topic)`` of every tier that reads a topic."""
        groups = [(self.group, self.topic)]
        if self.backend == "kafka":
            groups += [
                (retry_group_id(self.group, tier), topic)
                for tier, topic in enumerate(self.chain.retries, start=1)
            ]
        return groups

    async def _drained(self) -> bool:
        if self.backend == "postgres" and await stores.pending_rows(
            self.services.database_url, self.database, self.group
        ):
            return False
        if self.exactly_once:
            return await stores.unread(self.services.bootstrap, self.groups) == 0
        return await stores.lag(self.services.bootstrap, self.groups) == 0

    async def dead_letters(self) -> list[DeadLetter]:
        """Everything in the run's dead letter now."""
        if self.backend == "postgres":
            return await stores.postgres_dead_letters(
                self.services.database_url, self.database, self.group
            )
        return await stores.kafka_dead_letters(
            self.services.bootstrap, self.chain.dead_letter, self._isolation_level
        )

    @property
    def _isolation_level(self) -> str:
        return "read_committed" if self.exactly_once else "read_uncommitted"

    async def forwards(self, isolation_level: str | None = None) -> list[DeadLetter]:
        """Every record in the run's first retry topic (Kafka backend), read as the run reads."""
        return await stores.kafka_dead_letters(
            self.services.bootstrap, self.chain.retries[0], isolation_level or self._isolation_level
        )

    async def settle(self, within: float = 120.0) -> list[DeadLetter]:
        """Wait until every id is terminal and every tier has committed all it read.

        Returns the dead letters; past ``within`` seconds, or once every worker
        died, those found so far (the verdict then names what is missing).
        """
        deadline = time.monotonic() + within
        expected = {r.fid for r in self.records if behaviour(self.plan, r.fid).dead_letter}
        while True:
            self.ledger.refresh()
            if self._complete_in_ledger() and await self._drained():
                dead = await self.dead_letters()
                if expected <= {letter.fid for letter in dead}:
                    return dead
            if time.monotonic() > deadline or (self.workers and not self.alive):
                return await self.dead_letters()
            await asyncio.sleep(_SETTLE_POLL)

    async def finish(self, within: float = 120.0) -> Verdict:
        """Settle, stop every worker cleanly, and judge the run."""
        dead = await self.settle(within)
        await self.stop_all()
        return judge(self.plan, self.records, self.ledger.calls, dead)

    def report(self, verdict: Verdict) -> str:
        """The scenario's line: messages, lost, duplicates, seconds to recover."""
        recoveries = [fault.recovery for fault in self.faults]
        recover = f"{max(recoveries):.1f}s (worst of {len(recoveries)})" if recoveries else "-"
        return (
            f"{self.scenario:<22} {self.backend:<8} messages={verdict.messages} "
            f"lost={len(verdict.lost)} duplicates={verdict.duplicates} "
            f"extra_calls={verdict.extra_calls} recover={recover} "
            f"wall={time.time() - self.started:.0f}s"
        )

    def tail(self, worker: Worker | None = None, lines: int = 30) -> str:
        """The last lines of a worker's output (the last worker's by default)."""
        chosen = worker or (self.workers[-1] if self.workers else None)
        if chosen is None:
            return "(no worker)"
        return "\n".join(chosen.output().splitlines()[-lines:])
