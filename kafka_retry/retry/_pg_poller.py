"""The retry tiers of the postgres backend: one table poller per retry interval."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
from collections.abc import Sequence

from kafka_retry._clock import Cancellable, Clock
from kafka_retry.config import Config
from kafka_retry.message import Message
from kafka_retry.retry._pg_connect import TRANSIENT, Backoff, Sleeper
from kafka_retry.retry._pg_outcomes import OutcomeWriter
from kafka_retry.retry._pg_rows import (
    DEAD_LETTERED,
    PENDING,
    Row,
    chain_indices,
    clean_text,
    row_message,
    to_datetime,
    to_epoch_ms,
)
from kafka_retry.retry._pg_table import RetryRows
from kafka_retry.runtime.dispatch import BatchCall, Dispatcher

log = logging.getLogger("kafka_retry")

# Recording outcomes while cancelled must not hang on a dead database.
_RELEASE_TIMEOUT = 5.0


class TablePoller:
    """Retry tier ``k``: claims due rows with ``attempts = k`` and runs their handlers.

    A claim takes up to ``retry_batch_size`` rows with ``FOR UPDATE SKIP LOCKED``
    and leases them for ``retry_lease`` seconds to this worker, so concurrent
    pollers (here or in other processes) never get the same row while the lease
    holds; due times and leases are measured on the database's clock. The
    batch's handlers run as ``config.ordering`` says (a batch handler gets the
    claimed rows of each partition in batches); each row's outcome
    (succeeded, moved on to tier ``k + 1``, dead-lettered) is written soon after
    it finishes, and every row of the batch stays leased until then.
    Database errors are logged and retried with capped backoff.

    Args:
        tier: ``k``, from 1 to the number of retry intervals; 0 runs the waiting rows of
            ordered retries (their first attempt).
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
        self._writer = OutcomeWriter(
            self.name,
            rows,
            worker_id,
            tier,
            clock,
            config.drain_timeout,
            lambda: self._stop_at,
        )
        self._batch_calls: dict[str, BatchCall] = {}

    def request_stop(self) -> None:
        """Start no new row; let running ones finish (within ``drain_timeout``); end :meth:`run`.

        The rows of the batch that were not started are handed back.
        """
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
            await self._writer.flush(_RELEASE_TIMEOUT)
            raise
        else:
            await self._writer.flush()
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

        Outcomes are written as rows finish; the last ones are waited for
        before the next claim, so outcomes never pile up in memory.
        """
        rows = await self._claim()
        if rows:
            await self._handle(rows)
            await self._writer.flush()
        return len(rows) >= self._config.retry_batch_size

    async def _claim(self) -> list[Row]:
        return await self._rows.claim(
            self._config.group,
            self._tier,
            self._config.retry_batch_size,
            self._config.retry_lease,
            self._worker_id,
            self._topics,
        )

    async def _idle_time(self) -> float | None:
        """Seconds until the next row of this tier is due, at most the table's poll cap.

        None (sleep until the table reports a change) when no row is waiting
        and the table reports changes. The wait is the database's: a local
        clock that runs ahead or behind does not shorten or stretch it.
        """
        wait = await self._rows.due_in(self._config.group, self._tier, self._topics)
        cap = self._rows.poll_cap
        if wait is None:
            return cap
        wait = max(0.0, wait)
        return wait if cap is None else min(cap, wait)

    async def _handle(self, rows: Sequence[Row]) -> None:
        """Run the handlers of a claimed batch, recording each row's outcome as it finishes.

        Rows are taken in due order and run as ``config.ordering`` says, like
        the main tier: one after another per partition (``"partition"``) or per
        key (``"key"``), or all at once (``"none"``). After a stop request, or
        when a handler raises what ends the consumer (KeyboardInterrupt,
        SystemExit, another BaseException), no further row is started and
        running ones finish; on cancellation they are cancelled. The rows not
        finished are then released (within a short bound when the consumer
        ends), so they do not wait for their lease to run out.
        """
        group = self._config.group
        ordered = sorted(rows, key=lambda row: (row["due_at"], row["id"]))
        batch = [(row["id"], row_message(row, group)) for row in ordered]
        finished: set[int] = set()
        crashed = False

        async def run_chain(indices: list[int]) -> None:
            nonlocal crashed
            for step in self._steps(indices, batch):
                if crashed or self._stop_at is not None:
                    return  # stopping, or the consumer ends: start no further row
                try:
                    errors = await self._run_step(step, batch)
                except BaseException:
                    crashed = True
                    raise
                for index, error in zip(step, errors, strict=True):
                    row_id, message = batch[index]
                    self._finished(row_id, message, error)
                    finished.add(index)

        chains = chain_indices([message for _, message in batch], self._config.ordering)
        tasks = [asyncio.create_task(run_chain(chain)) for chain in chains]
        self._handling = set(tasks)
        if self._sleeper.stopping and self._drain_timer is None:
            self.request_stop()  # stop came in during the claim: arm the drain timer
        try:
            await self._wait_keeping_leases(tasks, [row_id for row_id, _ in batch])
        except asyncio.CancelledError:
            self._cancel_handlers()
            await asyncio.wait(tasks)
            await self._release_unfinished(batch, finished, _RELEASE_TIMEOUT)
            raise
        finally:
            self._handling = set()
        crashes = [task.exception() for task in tasks if not task.cancelled()]
        crash = next((error for error in crashes if error is not None), None)
        if crash is not None:  # invoke() returns handler failures: this ends the consumer
            await self._release_unfinished(batch, finished, _RELEASE_TIMEOUT)
            raise crash
        await self._release_unfinished(batch, finished, None)

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
        self, step: list[int], batch: list[tuple[int, Message]]
    ) -> list[BaseException | None]:
        """Run one step's handler call; the error of each of its rows (None: succeeded)."""
        dispatcher = self._dispatcher
        first = batch[step[0]][1]
        if dispatcher.batch_handler(first.main_topic) is None:
            return [await dispatcher.invoke(first)]
        call = self._batch_calls.get(first.main_topic)
        if call is None:
            call = self._batch_calls[first.main_topic] = dispatcher.batch_caller(first.main_topic)
        errors = await call([batch[index][1] for index in step])
        return [None] * len(step) if errors is None else errors

    async def _release_unfinished(
        self, batch: list[tuple[int, Message]], finished: set[int], bound: float | None
    ) -> None:
        """Hand back the rows that did not finish; with ``bound``, wait that long for the write."""
        self._writer.released([row_id for i, (row_id, _) in enumerate(batch) if i not in finished])
        if bound is not None:
            await self._writer.flush(bound)

    async def _wait_keeping_leases(
        self, tasks: list[asyncio.Task[None]], row_ids: list[int]
    ) -> None:
        """Wait for the handlers, renewing the batch's leases every third of the lease.

        Rows of one partition run one after another, so a batch can outlast a
        single lease; without renewal another worker would take them meanwhile.
        Every row is renewed until its outcome is written (a written row is
        no longer this worker's, so the renewal passes it by).
        """
        pending: set[asyncio.Task[None]] = set(tasks)
        every = self._config.retry_lease / 3
        while pending:
            _done, pending = await asyncio.wait(pending, timeout=every)
            if not pending:
                return
            try:
                await self._rows.extend(
                    row_ids, self._worker_id, self._tier, self._config.retry_lease
                )
            except TRANSIENT as exc:
                log.warning(
                    "tier %s: renewing %d lease(s) failed: %s", self.name, len(row_ids), exc
                )

    def _finished(self, row_id: int, message: Message, error: BaseException | None) -> None:
        """Hand the outcome of one row to the writer."""
        if error is None:
            self._writer.succeeded(row_id)
            return
        failure = self._dispatcher.failure(message, error)
        # A failure at attempt k + 1 waits interval k + 1 (index k) for the next tier.
        delay = 0.0 if failure.final else self._config.retry_intervals[self._tier]
        self._writer.failed(
            row_id,
            DEAD_LETTERED if failure.final else PENDING,
            to_datetime(failure.failed_at + round(delay * 1000)),
            to_datetime(failure.failed_at),
            clean_text(failure.error_type),
            clean_text(failure.error_message),
            failure.span,
        )
