"""DESIGN §2 under faults: every id reaches exactly its planned terminal state, none is lost.

Each scenario adds a line to the report: messages, lost (must be 0),
duplicates (terminal records past an id's first; at-least-once allows them
except where a scenario says zero), extra handler calls, and the worst
seconds to recover from its faults.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pytest

from tests.faults.harness import Fault, FaultRun
from tests.faults.ledger import Call, DeadLetter, Verdict
from tests.faults.plan import INTERRUPTS, Act, behaviour
from tests.faults.services import Services, Worker

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

BACKENDS = ["kafka", "postgres"]
T = TypeVar("T")
# A paced run's main tier lasts about this long, so that its faults land mid-run.
_PACED_SECONDS = 10.0
_PARTITIONS = 6


def paced(count: int) -> float:
    """Seconds per handler call that make ``count`` messages last :data:`_PACED_SECONDS`."""
    return _PARTITIONS * _PACED_SECONDS / count


def moments(rng: random.Random, count: int, low: float = 0.05, high: float = 0.9) -> list[float]:
    """``count`` random progress fractions between ``low`` and ``high``, in order."""
    return sorted(rng.uniform(low, high) for _ in range(count))


def conclude(results: Iterable[tuple[FaultRun, Verdict]], report: list[str]) -> None:
    """Report each run's line, then fail on any broken guarantee."""
    results = list(results)
    report.extend(run.report(verdict) for run, verdict in results)
    for run, verdict in results:
        assert not verdict.problems(), f"{run.scenario}/{run.backend}: {verdict.problems()}"


async def at_once(*work: Coroutine[Any, Any, T]) -> list[T]:
    """Await every coroutine concurrently; if one fails, the others are cancelled."""
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(coroutine) for coroutine in work]
    return [task.result() for task in tasks]


@contextlib.asynccontextmanager
async def both_backends(
    services: Services, directory: Path, **fields: Any
) -> AsyncIterator[list[FaultRun]]:
    """One run per retry backend, each with its own topic, group and workers."""
    async with contextlib.AsyncExitStack() as stack:
        runs = [
            await stack.enter_async_context(
                FaultRun(services, directory / backend, backend=backend, **fields)
            )
            for backend in BACKENDS
        ]
        yield runs


async def test_sigkill_five_times(
    fault_services: Services,
    fault_count: int,
    fault_random: random.Random,
    fault_report: list[str],
    tmp_path: Path,
) -> None:
    """SIGKILL of the only consumer at 5 random moments, restarted each time, loses nothing.

    Both backends run at once, each with its own moments. Recovery is the time
    from a restart to the new process's first handler call.
    """

    async def kill_five_times(run: FaultRun, rng: random.Random) -> Verdict:
        worker = run.start_worker()
        for fraction in moments(rng, 5):
            await run.wait_progress(fraction)
            await asyncio.sleep(rng.uniform(0, 0.3))
            worker = await run.restart(worker)
        return await run.finish()

    async with both_backends(
        fault_services, tmp_path, scenario="sigkill x5", count=fault_count
    ) as runs:
        verdicts = await at_once(
            *(kill_five_times(run, random.Random(fault_random.random())) for run in runs)
        )
    for run in runs:
        for fault, new in zip(run.faults, run.workers[1:], strict=True):
            fault.recovery = run.ledger.first_after(fault.over, pid=new.pid)
    conclude(zip(runs, verdicts, strict=True), fault_report)


def _duplicates(records: Iterable[DeadLetter]) -> int:
    """Records past the first of each id."""
    counts = collections.Counter(record.fid for record in records)
    return sum(count - 1 for count in counts.values())


@pytest.mark.parametrize("exactly_once", [True, False], ids=["exactly_once", "at_least_once"])
async def test_sigkill_five_times_storm_retry_topic(
    exactly_once: bool,
    fault_services: Services,
    fault_count: int,
    fault_random: random.Random,
    fault_report: list[str],
    tmp_path: Path,
) -> None:
    """A storm (every first attempt fails), SIGKILL x5: exactly_once forwards each failure once.

    With exactly_once the retry topic read with read_committed holds every id
    exactly once; read_uncommitted shows the forwards the kills aborted. Both
    lose nothing; without it the report shows the duplicate forwards a kill
    between a forward and its commit leaves. Handler calls stay at-least-once.
    """
    rng = random.Random(fault_random.random())
    async with FaultRun(
        fault_services,
        tmp_path / "kafka",
        scenario=f"sigkill x5 storm {'eo' if exactly_once else 'alo'}",
        backend="kafka",
        plan="storm",
        count=fault_count,
        exactly_once=exactly_once,
    ) as run:
        worker = run.start_worker()
        for fraction in moments(rng, 5):
            await run.wait_progress(fraction)
            await asyncio.sleep(rng.uniform(0, 0.3))
            worker = await run.restart(worker)
        verdict = await run.finish()
        committed = await run.forwards()
        raw = await run.forwards("read_uncommitted")
    for fault, new in zip(run.faults, run.workers[1:], strict=True):
        fault.recovery = run.ledger.first_after(fault.over, pid=new.pid)
    duplicates = _duplicates(committed)
    fault_report.append(
        f"{run.report(verdict)} retry-topic(read_committed)={len(committed)}"
        f" duplicates={duplicates} aborted-forwards={len(raw) - len(committed)}"
    )
    conclude([(run, verdict)], [])
    assert {record.fid for record in committed} == {record.fid for record in run.records}
    if exactly_once:
        assert duplicates == 0
        assert len(committed) == run.count


async def test_sigkill_during_a_storm(
    fault_services: Services,
    fault_count: int,
    fault_random: random.Random,
    fault_report: list[str],
    tmp_path: Path,
) -> None:
    """SIGKILL at 3 random moments while every first call fails: batched hand-offs lose nothing.

    Each kill lands with hand-offs batched and in flight; an offset committed
    before its failure was stored would show as a lost id.
    """

    async def kill_three_times(run: FaultRun, rng: random.Random) -> Verdict:
        worker = run.start_worker()
        for fraction in moments(rng, 3):
            await run.wait_progress(fraction)
            await asyncio.sleep(rng.uniform(0, 0.3))
            worker = await run.restart(worker)
        return await run.finish()

    async with both_backends(
        fault_services, tmp_path, scenario="sigkill x3 storm", count=fault_count, plan="storm"
    ) as runs:
        verdicts = await at_once(
            *(kill_three_times(run, random.Random(fault_random.random())) for run in runs)
        )
    for run in runs:
        for fault, new in zip(run.faults, run.workers[1:], strict=True):
            fault.recovery = run.ledger.first_after(fault.over, pid=new.pid)
    conclude(zip(runs, verdicts, strict=True), fault_report)


async def test_sigkill_with_ordered_retries(
    fault_services: Services,
    fault_count: int,
    fault_random: random.Random,
    fault_report: list[str],
    tmp_path: Path,
) -> None:
    """Ordered retries, SIGKILL at 3 random moments: nothing lost, per-key order kept.

    Ids share keys; the verdict also fails an id first handled before the
    previous id of its key reached its last attempt.
    """
    async with FaultRun(
        fault_services,
        tmp_path / "postgres",
        scenario="sigkill x3 ordered",
        backend="postgres",
        plan="ordered",
        count=fault_count,
    ) as run:
        worker = run.start_worker()
        for fraction in moments(fault_random, 3):
            await run.wait_progress(fraction)
            await asyncio.sleep(fault_random.uniform(0, 0.3))
            worker = await run.restart(worker)
        verdict = await run.finish()
    for fault, new in zip(run.faults, run.workers[1:], strict=True):
        fault.recovery = run.ledger.first_after(fault.over, pid=new.pid)
    conclude([(run, verdict)], fault_report)


async def test_clean_rebalances_exactly_once(
    fault_services: Services,
    fault_count: int,
    fault_random: random.Random,
    fault_report: list[str],
    tmp_path: Path,
) -> None:
    """exactly_once: members join and leave cleanly: no duplicate handler call, no loss."""
    async with FaultRun(
        fault_services,
        tmp_path / "kafka",
        scenario="rebalance (clean) eo",
        backend="kafka",
        count=fault_count,
        pace=paced(fault_count),
        exactly_once=True,
    ) as run:
        verdict = await _churn(run, random.Random(fault_random.random()), "clean")
        committed = await run.forwards()
    for fault in run.faults:
        fault.recovery = run.ledger.longest_pause(fault.over, fault.over + 15)
    conclude([(run, verdict)], fault_report)
    assert verdict.duplicates == 0, f"{verdict.duplicates} duplicate(s)"
    assert verdict.extra_calls == 0, f"{verdict.extra_calls} redelivery(ies)"
    assert _duplicates(committed) == 0


async def test_broker_restart(
    fault_services: Services,
    fault_count: int,
    fault_random: random.Random,
    fault_report: list[str],
    tmp_path: Path,
) -> None:
    """Kafka stopped and restarted mid-run: the consumers recover by themselves, nothing is lost.

    One outage hits both backends' runs at once. Handlers are paced, and values
    padded to ~20 MB in all, so that work is in flight in every tier when the
    broker goes and the consumers cannot finish from what they fetched before.
    Recovery is counted until a message never handled before is handled.
    """
    async with both_backends(
        fault_services,
        tmp_path,
        scenario="broker restart",
        count=fault_count,
        pace=paced(fault_count),
        padding=max(64, 20_000_000 // fault_count),
    ) as runs:
        for run in runs:
            run.start_worker()
        fraction = fault_random.uniform(0.2, 0.6)
        await at_once(*(run.wait_progress(fraction) for run in runs))
        await asyncio.to_thread(fault_services.stop_kafka)
        await asyncio.to_thread(fault_services.start_kafka)
        over = time.time()
        for run in runs:
            run.faults.append(Fault("broker restart", over))
        verdicts = await at_once(*(run.finish() for run in runs))
    for run in runs:
        run.faults[0].recovery = run.ledger.first_new_after(over)
        assert len(run.workers) == 1, f"{run.backend}: the consumer was restarted by hand"
    conclude(zip(runs, verdicts, strict=True), fault_report)


async def test_postgres_outage(
    fault_services: Services,
    fault_count: int,
    fault_random: random.Random,
    fault_report: list[str],
    tmp_path: Path,
) -> None:
    """PostgreSQL down for 10 s with the postgres backend: no loss, the consumer recovers by itself.

    Recovery is counted until a retry tier (which needs the table) handles a message again.
    """
    async with FaultRun(
        fault_services,
        tmp_path,
        scenario="postgres down 10s",
        backend="postgres",
        count=fault_count,
        pace=paced(fault_count),
    ) as run:
        run.start_worker()
        await run.wait_progress(fault_random.uniform(0.2, 0.5))
        await asyncio.to_thread(fault_services.stop_postgres)
        await asyncio.sleep(10)
        await asyncio.to_thread(fault_services.start_postgres)
        fault = Fault("postgres restart", time.time())
        run.faults.append(fault)
        verdict = await run.finish()
    fault.recovery = run.ledger.first_after(fault.over, min_attempt=2)
    assert len(run.workers) == 1, "the consumer was restarted by hand"
    conclude([(run, verdict)], fault_report)


async def _churn(run: FaultRun, rng: random.Random, leave: str) -> Verdict:
    """Members join and leave at 6 random moments; at most 3, at least 1, at a time."""
    run.start_worker()
    for fraction in moments(rng, 6, high=0.85):
        await run.wait_progress(fraction)
        alive = run.alive
        if len(alive) == 3 or (len(alive) > 1 and rng.random() < 0.5):
            victim = rng.choice(alive)
            if leave == "clean":
                await run.stop(victim)
            else:
                victim.kill()
            run.faults.append(Fault("leave", time.time()))
        else:
            await run.join()
            run.faults.append(Fault("join", time.time()))
    return await run.finish()


@pytest.mark.parametrize("leave", ["clean", "kill"])
async def test_rebalances(
    leave: str,
    fault_services: Services,
    fault_count: int,
    fault_random: random.Random,
    fault_report: list[str],
    tmp_path: Path,
) -> None:
    """Up to 3 consumers join and leave repeatedly: no loss; no duplicate when they leave cleanly.

    Both backends run at once. Handlers are paced so that the run lasts long
    enough for the members to come and go mid-run. Recovery is the longest
    pause in handling after a change, within 15 s of it.
    """
    async with both_backends(
        fault_services,
        tmp_path,
        scenario=f"rebalance ({leave})",
        count=fault_count,
        pace=paced(fault_count),
    ) as runs:
        verdicts = await at_once(
            *(_churn(run, random.Random(fault_random.random()), leave) for run in runs)
        )
    for run in runs:
        for fault in run.faults:
            fault.recovery = run.ledger.longest_pause(fault.over, fault.over + 15)
    conclude(zip(runs, verdicts, strict=True), fault_report)
    if leave == "clean":
        # Kafka's OffsetValidationTest standard: clean membership changes redeliver nothing.
        for run, verdict in zip(runs, verdicts, strict=True):
            assert verdict.duplicates == 0, f"{run.backend}: {verdict.duplicates} duplicate(s)"
            assert verdict.extra_calls == 0, f"{run.backend}: {verdict.extra_calls} redelivery(ies)"


def _first_hang(run: FaultRun, pid: int) -> int | None:
    """The id of the first call by ``pid`` that hangs on attempt 1, if any."""
    for call in run.ledger.calls:
        line = call.line
        if call.pid == pid and line.outcome == Act.HANG.value and line.attempt == 1:
            return line.fid
    return None


@pytest.mark.parametrize("backend", BACKENDS)
async def test_handler_timeouts_and_cancellation(
    backend: str, fault_services: Services, fault_report: list[str], tmp_path: Path
) -> None:
    """Hangs past the handler timeout and self-cancellation are retried; a returned value succeeds.

    A handler still running when the consumer stops cleanly is cancelled at
    the drain timeout and redelivered, at the same attempt, after the restart.
    Exhausted hangs and cancellations reach the dead letter with their error type.
    """
    async with FaultRun(
        fault_services,
        tmp_path,
        scenario="handler timeouts",
        backend=backend,
        plan="timeouts",
        count=48,
        handler_timeout=1.0,
        drain_timeout=0.5,
    ) as run:
        worker = run.start_worker()
        await run.wait_for(lambda: _first_hang(run, worker.pid) is not None, 60, "a hang")
        hung = _first_hang(run, worker.pid)
        await run.stop(worker)  # within the hang: the drain cancels it
        run.start_worker()
        run.faults.append(Fault("clean restart", time.time()))
        verdict = await run.finish()
        dead = await run.dead_letters()
    run.faults[0].recovery = run.ledger.first_after(run.faults[0].over)
    conclude([(run, verdict)], fault_report)
    redelivered = [c for c in run.ledger.calls if c.line.fid == hung and c.line.attempt == 1]
    assert len(redelivered) >= 2, f"id {hung} was not redelivered after the drain cancelled it"
    for letter in dead:
        assert letter.fid is not None
        act = behaviour("timeouts", letter.fid).act(3)
        wanted = {Act.HANG: "TimeoutError", Act.CANCEL: "CancelledError"}[act]
        assert letter.error_type.endswith(wanted), f"id {letter.fid}: {letter.error_type}"


@attrs.frozen
class Ending:
    """How a worker process ended.

    Attributes:
        pid: Its process id.
        code: Its exit status.
        output: What it printed.
        at: When the test saw it gone.
    """

    pid: int
    code: int | None
    output: str
    at: float


def _interruptions(run: FaultRun) -> dict[int, Call]:
    """The first interrupting call of each id of the interrupts plan seen so far."""
    found: dict[int, Call] = {}
    for call in run.ledger.calls:
        if call.line.outcome in (Act.INTERRUPT.value, Act.ABORT.value):
            found.setdefault(call.line.fid, call)
    return found


def _ended_or_done(run: FaultRun, worker: Worker) -> Callable[[], bool]:
    """Whether ``worker`` ended, or every interruption ended another worker."""

    def check() -> bool:
        interrupted = _interruptions(run)
        return not worker.alive or (
            len(interrupted) == len(INTERRUPTS)
            and worker.pid not in {call.pid for call in interrupted.values()}
        )

    return check


@pytest.mark.parametrize("backend", BACKENDS)
async def test_handler_interruptions(
    backend: str, fault_services: Services, fault_report: list[str], tmp_path: Path
) -> None:
    """KeyboardInterrupt (main and retry tier) and a plain BaseException end the process.

    Each ends the consumer promptly with that exception (never taken for a
    retry), after a clean shutdown; its message is redelivered on restart at
    the same attempt and then succeeds.
    """
    async with FaultRun(
        fault_services,
        tmp_path,
        scenario="handler interrupts",
        backend=backend,
        plan="interrupts",
        count=60,
        drain_timeout=2.0,
    ) as run:
        worker = run.start_worker()
        endings: dict[int, Ending] = {}
        while True:
            await run.wait_for(_ended_or_done(run, worker), 90, "an interruption")
            if worker.alive:
                break
            endings[worker.pid] = Ending(
                worker.pid, worker.returncode, worker.output(), time.time()
            )
            worker = run.start_worker()
            run.faults.append(Fault("restart", time.time()))
        verdict = await run.finish()
    for fault, new in zip(run.faults, run.workers[1:], strict=True):
        fault.recovery = run.ledger.first_after(fault.over, pid=new.pid)
    conclude([(run, verdict)], fault_report)
    for fid, first in _interruptions(run).items():
        attempt = first.line.attempt
        calls = [c for c in run.ledger.calls if c.line.fid == fid and c.line.attempt == attempt]
        assert [c.line.outcome for c in calls][:2] == [first.line.outcome, Act.OK.value], fid
        ending = endings[first.pid]
        took = ending.at - first.line.at
        assert took < 15, f"the process took {took:.0f}s to end after id {fid} interrupted it"
    for ending in endings.values():
        # It ends with the first interruption that reached the consumer's top.
        assert ending.code != 0, ending
        assert "KeyboardInterrupt: planned interrupt" in ending.output or (
            "Abort: planned abort" in ending.output
        ), ending.output[-2000:]
    assert len(_interruptions(run)) == len(INTERRUPTS)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_poison_input(
    backend: str, fault_services: Services, fault_report: list[str], tmp_path: Path
) -> None:
    """Empty, null, huge, non-UTF-8 records and duplicate headers reach their end byte-exact.

    Each kind is produced in four behaviours (success, success on retry 2,
    always failing, non-retryable); every handler call and every dead letter
    must carry the record exactly as produced (key, value, headers, timestamp).
    """
    async with FaultRun(
        fault_services, tmp_path, scenario="poison input", backend=backend, plan="poison"
    ) as run:
        run.start_worker()
        verdict = await run.finish()
    conclude([(run, verdict)], fault_report)
