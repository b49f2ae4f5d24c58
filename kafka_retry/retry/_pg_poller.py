"""The retry tiers of the postgres backend: one table poller per retry interval."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
from collections.abc import Sequence

from kafka_retry._clock import Cancellable, Clock
from kafka_retry.config import Config
from kafka_retry.message import Message
from kafka_retry.retry._pg_connect import TRANSIENT, Backoff, Sleeper
from kafka_retry.retry._pg_rows import (
    DEAD_LETTERED,
    PENDING,
    Row,
    chain_indices,
    clean_text,
    floor_datetime,
    row_message,
    to_datetime,
    to_epoch_ms,
)
from kafka_retry.retry._pg_table import Outcome, RetryRows
from kafka_retry.runtime.dispatch import BatchCall, Dispatcher

log = logging.getLogger("kafka_retry")

# Recording outcomes while cancelled must not hang on a dead database.
_RELEASE_TIMEOUT = 5.0


class TablePoller:
    """Retry tier ``k``: claims due rows with ``attempts = k`` and runs their handlers.

    A claim takes up to ``retry_batch_size`` rows with ``FOR UPDATE SKIP LOCKED``
    and leases them for ``retry_lease`` seconds to this worker, so concurrent
    pollers (here or in other processes) never get the same row while the lease
    holds. The batch's handlers run as ``config.ordering`` says (a batch
    handler gets the claimed rows of each partition in batches); then one
    transaction marks the rows succeeded, moves them on to tier ``k + 1`` or
    dead-letters them.
    Database errors are logged and retried with capped backoff.

    Args:
        tier: ``k``, from 1 to the number of retry intervals.
        config: The consumer's settings.
        rows: The retry table.
        dispatcher: Runs handlers with ``attempt = k + 1`` and describes failures.
        clock: Time source for due times, leases and sleeps.
        worker_id: Written to ``claimed_by``; unique per backend instance.
    """

    def __init__(
        self,
        tier: int,
        config: Config,
        rows: RetryRows,
        dispatcher: Dispatcher,
        clock: Clock,
        worker_id: str,
    ) -> None:
        self.name = f"retry{tier}"
        self.ready = asyncio.Event()
        self._tier = tier
        self._config = config
        self._rows = rows
        self._dispatcher = dispatcher
        self._clock = clock
        self._worker_id = worker_id
        self._topics = list(config.topics)
        self._sleeper = Sleeper(clock)
        # Until when the poller naps without looking at the table (infinite while it looks).
        self._wake_at = math.inf
        rows.on_change(self._notice)
        self._backoff = Backoff()
        self._handling: set[asyncio.Task[None]] = set()
        self._drain_timer: Cancellable | None = None
        self._stop_at: float | None = None
        self._writing: asyncio.Task[None] | None = None
        self._batch_calls: dict[str, BatchCall] = {}

    def request_stop(self) -> None:
        """Finish the batch in flight (within ``drain_timeout``), then end :meth:`run`."""
        if self._stop_at is None:
            self._stop_at = self._clock.time()
        self._sleeper.stop()
        if self._handling and self._drain_timer is None:
            self._drain_timer = self._clock.call_later(
                self._config.drain_timeout, self._cancel_handlers
            )

    def _cancel_handlers(self) -> None:
        for task in self._handling:
            task.cancel()

    async def run(self) -> None:
        """Claim and handle due rows until stopped."""
        self.ready.set()
        try:
            while not self._sleeper.stopping:
                try:
                    full = await self._cycle()
                    self._backoff.reset()
                    if not full:
                        await self._nap(await self._idle_time())
                except TRANSIENT as exc:
                    delay = self._backoff.delay()
                    log.warning(
                        "tier %s: database error (%s: %s); retrying in %.1fs",
                        self.name,
                        type(exc).__name__,
                        exc,
                        delay,
                    )
                    await self._sleeper.nap(delay)
        except BaseException:  # cancelled, or a handler ended the consumer
            if self._stop_at is None:
                self._stop_at = self._clock.time()
            await self._finish_write(_RELEASE_TIMEOUT)
            raise
        else:
            await self._finish_write(None)
        finally:
            if self._drain_timer is not None:
                self._drain_timer.cancel()

    def _notice(self, tier: int, due: dt.datetime) -> None:
        """A row of ``tier`` is pending, due at ``due``: wake up if that is before the nap ends.

        While the poller looks at the table, any notice ends its next nap at
        once: the row may have come in after the look.
        """
        if tier == self._tier and to_epoch_ms(due) / 1000 < self._wake_at:
            self._sleeper.poke()

    async def _nap(self, seconds: float | None) -> None:
        self._wake_at = math.inf if seconds is None else self._clock.time() + seconds
        try:
            await self._sleeper.nap(seconds)
        finally:
            self._wake_at = math.inf

    async def _cycle(self) -> bool:
        """Claim one batch and handle it; True when the batch was full.

        The batch's outcome is written in the background while the next batch
        is claimed and handled; its rows stay leased meanwhile, so no one else
        takes them. At most one write is in flight.
        """
        rows = await self._claim()
        if rows:
            outcome = await self._handle(rows)
            await self._finish_write(None)
            self._writing = asyncio.create_task(self._record(outcome))
        return len(rows) >= self._config.retry_batch_size

    async def _finish_write(self, bound: float | None) -> None:
        """Wait for the background write (cancel it after ``bound`` seconds, if given)."""
        writing, self._writing = self._writing, None
        if writing is None:
            return
        if bound is not None:
            await asyncio.wait({writing}, timeout=bound)
            writing.cancel()
        await writing

    async def _claim(self) -> list[Row]:
        now = self._clock.time()
        return await self._rows.claim(
            self._config.group,
            self._tier,
            floor_datetime(now),
            self._config.retry_batch_size,
            self._lease_end(now),
            self._worker_id,
            self._topics,
        )

    def _lease_end(self, now: float) -> dt.datetime:
        return to_datetime(round((now + self._config.retry_lease) * 1000))

    async def _idle_time(self) -> float | None:
        """Seconds until the next row of this tier is due, at most the table's poll cap.

        None (sleep until the table reports a change) when no row is waiting
        and the table reports changes.
        """
        now = self._clock.time()
        due = await self._rows.next_due(
            self._config.group, self._tier, floor_datetime(now), self._topics
        )
        cap = self._rows.poll_cap
        if due is None:
            return cap
        wait = max(0.0, to_epoch_ms(due) / 1000 - now)
        return wait if cap is None else min(cap, wait)

    async def _handle(self, rows: Sequence[Row]) -> Outcome:
        """Run the handlers of a claimed batch; return what happened.

        Rows are taken in due order and run as ``config.ordering`` says, like
        the main tier: one after another per partition (``"partition"``) or per
        key (``"key"``), or all at once (``"none"``). On cancellation the
        handlers are cancelled; when a handler raises what ends the consumer
        (KeyboardInterrupt, SystemExit, another BaseException), no further row
        is started and running ones finish. Either way, what finished is
        recorded and the rest released, within a short bound, before re-raising:
        the rows do not wait for their lease to run out.
        """
        group = self._config.group
        ordered = sorted(rows, key=lambda row: (row["due_at"], row["id"]))
        batch = [(row["id"], row_message(row, group)) for row in ordered]
        results: dict[int, BaseException | None] = {}
        crashed = False

        async def run_chain(indices: list[int]) -> None:
            nonlocal crashed
            for step in self._steps(indices, batch):
                if crashed:
                    return
                try:
                    await self._run_step(step, batch, results)
                except BaseException:
                    crashed = True
                    raise

        chains = chain_indices([message for _, message in batch], self._config.ordering)
        tasks = [asyncio.create_task(run_chain(chain)) for chain in chains]
        self._handling = set(tasks)
        if self._sleeper.stopping and self._drain_timer is None:
            self.request_stop()  # stop came in during the claim: arm the drain timer
        try:
            await self._wait_keeping_leases(tasks, batch, results)
        except asyncio.CancelledError:
            self._cancel_handlers()
            await asyncio.wait(tasks)
            await self._record_at_once(batch, results)
            raise
        finally:
            self._handling = set()
        for task in tasks:
            crash = None if task.cancelled() else task.exception()
            if crash is not None:  # invoke() returns handler failures: this ends the consumer
                await self._record_at_once(batch, results)
                raise crash
        return self._outcome(batch, results)

    def _steps(self, indices: list[int], batch: list[tuple[int, Message]]) -> list[list[int]]:
        """A chain's handler calls, in order: one row each, or batches for a batch handler.

        A chain holds the claimed rows of one main topic and partition (batch
        handlers need ``ordering="partition"``); every one is due, so its batch
        handler gets them in offset order, as on Kafka, ``max_size`` at a time.
        A claim never waits for more rows.
        """
        spec = self._dispatcher.batch_handler(batch[indices[0]][1].main_topic)
        if spec is None:
            return [[index] for index in indices]
        indices = sorted(indices, key=lambda index: batch[index][1].offset)
        size = spec.max_size
        return [indices[start : start + size] for start in range(0, len(indices), size)]

    async def _run_step(
        self,
        step: list[int],
        batch: list[tuple[int, Message]],
        results: dict[int, BaseException | None],
    ) -> None:
        dispatcher = self._dispatcher
        first = batch[step[0]][1]
        if dispatcher.batch_handler(first.main_topic) is None:
            results[step[0]] = await dispatcher.invoke(first)
            return
        call = self._batch_calls.get(first.main_topic)
        if call is None:
            call = self._batch_calls[first.main_topic] = dispatcher.batch_caller(first.main_topic)
        errors = await call([batch[index][1] for index in step])
        for position, index in enumerate(step):
            results[index] = None if errors is None else errors[position]

    async def _record_at_once(
        self, batch: list[tuple[int, Message]], results: dict[int, BaseException | None]
    ) -> None:
        """Record what finished and release the rest, giving up after a short bound."""
        with contextlib.suppress(*TRANSIENT):  # TimeoutError is an OSError
            async with asyncio.timeout(_RELEASE_TIMEOUT):
                await self._write(self._outcome(batch, results))

    async def _wait_keeping_leases(
        self,
        tasks: list[asyncio.Task[None]],
        batch: list[tuple[int, Message]],
        results: dict[int, BaseException | None],
    ) -> None:
        """Wait for the handlers, renewing the lease of unfinished rows every third of it.

        Rows of one partition run one after another, so a batch can outlast a
        single lease; without renewal another worker would take them meanwhile.
        """
        pending: set[asyncio.Task[None]] = set(tasks)
        every = self._config.retry_lease / 3
        while pending:
            _done, pending = await asyncio.wait(pending, timeout=every)
            if not pending:
                return
            unfinished = [row_id for i, (row_id, _) in enumerate(batch) if i not in results]
            lease_end = self._lease_end(self._clock.time())
            try:
                await self._rows.extend(unfinished, self._worker_id, self._tier, lease_end)
            except TRANSIENT as exc:
                log.warning(
                    "tier %s: renewing %d lease(s) failed: %s", self.name, len(unfinished), exc
                )

    def _outcome(
        self,
        batch: list[tuple[int, Message]],
        results: dict[int, BaseException | None],
    ) -> Outcome:
        outcome = Outcome()
        intervals = self._config.retry_intervals
        for index, (row_id, message) in enumerate(batch):
            if index not in results:
                outcome.released.append(row_id)  # cancelled before or while running
                continue
            error = results[index]
            if error is None:
                outcome.succeeded.append(row_id)
                continue
            failure = self._dispatcher.failure(message, error)
            # A failure at attempt k + 1 waits interval k + 1 (index k) for the next tier.
            delay = 0.0 if failure.final else intervals[self._tier]
            outcome.failed.append(row_id)
            outcome.states.append(DEAD_LETTERED if failure.final else PENDING)
            outcome.due.append(to_datetime(failure.failed_at + round(delay * 1000)))
            outcome.failed_at.append(to_datetime(failure.failed_at))
            outcome.error_types.append(clean_text(failure.error_type))
            outcome.errors.append(clean_text(failure.error_message))
            outcome.spans.append(failure.span)
        return outcome

    async def _record(self, outcome: Outcome) -> None:
        """Write the outcome, retrying database errors.

        Once stopping, gives up after ``drain_timeout``: the leases then expire
        and the rows are handled again (at least once, never lost).
        """
        backoff = Backoff()
        while True:
            try:
                await self._write(outcome)
                return
            except TRANSIENT as exc:
                if self._stop_at is not None and (
                    self._clock.time() - self._stop_at >= self._config.drain_timeout
                ):
                    log.warning(
                        "tier %s: could not record %d handled row(s) before stopping (%s);"
                        " they are retried when their lease expires",
                        self.name,
                        outcome.rows,
                        exc,
                    )
                    return
                delay = backoff.delay()
                log.warning(
                    "tier %s: recording results failed (%s); retrying in %.1fs",
                    self.name,
                    exc,
                    delay,
                )
                await self._clock.sleep(delay)

    async def _write(self, outcome: Outcome) -> None:
        changed = await self._rows.write(outcome, self._worker_id, self._tier)
        if changed < outcome.rows:
            log.warning(
                "tier %s: %d row(s) were no longer leased to this worker (the lease"
                " expired while handling, or a broken-off earlier write went through)",
                self.name,
                outcome.rows - changed,
            )
