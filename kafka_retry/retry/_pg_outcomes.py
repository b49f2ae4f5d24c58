"""Recording what happened to a retry tier's rows, as each one finishes."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable

from kafka_retry._clock import Clock
from kafka_retry.retry._pg_connect import TRANSIENT, Backoff
from kafka_retry.retry._pg_table import Outcome, RetryRows

log = logging.getLogger("kafka_retry")


class OutcomeWriter:
    """Writes the outcomes of one tier's rows in the background, soon after each finishes.

    One write is in flight at a time; it takes every outcome that came in
    since the one before, so fast handlers share a write while a slow row in
    the same batch no longer holds back those finished before it (another
    instance could claim them again once their lease ran out).

    Args:
        name: The tier, for logs.
        rows: The retry table.
        worker: The poller's worker id (writes change only rows leased to it).
        tier: The tier's number.
        clock: Time source for backoff sleeps.
        drain_timeout: How long, once stopping, a failing write is retried.
        stopping_since: When the poller was asked to stop, or None.
    """

    def __init__(
        self,
        name: str,
        rows: RetryRows,
        worker: str,
        tier: int,
        clock: Clock,
        drain_timeout: float,
        stopping_since: Callable[[], float | None],
    ) -> None:
        self._name = name
        self._rows = rows
        self._worker = worker
        self._tier = tier
        self._clock = clock
        self._drain_timeout = drain_timeout
        self._stopping_since = stopping_since
        self._pending = Outcome()
        self._task: asyncio.Task[None] | None = None

    def succeeded(self, row_id: int) -> None:
        """Record that the handler of row ``row_id`` succeeded."""
        self._pending.succeeded.append(row_id)
        self._kick()

    def failed(
        self,
        row_id: int,
        state: str,
        due: dt.datetime,
        failed_at: dt.datetime,
        error_type: str,
        error: str,
        span: str | None = None,
    ) -> None:
        """Record a failure: the row moves on to the next tier (pending) or is dead-lettered.

        ``span`` is the failed attempt's span (tracing), for the next attempt's link.
        """
        pending = self._pending
        pending.failed.append(row_id)
        pending.states.append(state)
        pending.due.append(due)
        pending.failed_at.append(failed_at)
        pending.error_types.append(error_type)
        pending.errors.append(error)
        pending.spans.append(span)
        self._kick()

    def released(self, row_ids: list[int]) -> None:
        """Hand rows back unhandled (never started, or cancelled while running)."""
        if row_ids:
            self._pending.released.extend(row_ids)
            self._kick()

    def _kick(self) -> None:
        task = self._task
        if task is None or task.done():
            if task is not None and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]  # not a database error: a bug
            self._task = asyncio.create_task(self._drain(), name=f"kafka-retry:{self._name}:write")

    async def _drain(self) -> None:
        while self._pending.rows:
            outcome, self._pending = self._pending, Outcome()
            await self._record(outcome)

    async def flush(self, bound: float | None = None) -> None:
        """Wait until everything recorded so far is written (given up on after ``bound`` s)."""
        task = self._task
        if task is None or task.cancelled():  # a write given up on: the leases run out
            return
        if bound is None:
            await task
            return
        await asyncio.wait({task}, timeout=bound)
        if task.done():
            await task
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _record(self, outcome: Outcome) -> None:
        """Write ``outcome``, retrying database errors.

        Once stopping, gives up after ``drain_timeout``: the leases then expire
        and the rows are handled again (at least once, never lost).
        """
        backoff = Backoff()
        while True:
            try:
                await self._write(outcome)
                return
            except TRANSIENT as exc:
                since = self._stopping_since()
                if since is not None and self._clock.time() - since >= self._drain_timeout:
                    log.warning(
                        "tier %s: could not record %d handled row(s) before stopping (%s);"
                        " they are retried when their lease expires",
                        self._name,
                        outcome.rows,
                        exc,
                    )
                    return
                delay = backoff.delay()
                log.warning(
                    "tier %s: recording results failed (%s); retrying in %.1fs",
                    self._name,
                    exc,
                    delay,
                )
                await self._clock.sleep(delay)

    async def _write(self, outcome: Outcome) -> None:
        changed = await self._rows.write(outcome, self._worker, self._tier)
        if changed < outcome.rows:
            log.warning(
                "tier %s: %d row(s) were no longer leased to this worker (the lease"
                " expired while handling, or a broken-off earlier write went through)",
                self._name,
                outcome.rows - changed,
            )
