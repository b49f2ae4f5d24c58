"""The postgres retry backend's table, in memory: what the test mode runs that backend on."""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from kafka_retry._clock import Clock
from kafka_retry.retry.table import (
    DEAD_LETTERED,
    INSERT_COLUMNS,
    PENDING,
    SUCCEEDED,
    WAITING,
    Listener,
    Outcome,
    RetryCounts,
    Row,
    floor_datetime,
    to_datetime,
    to_epoch_ms,
)

__all__ = ["MemoryRetryTable"]


class MemoryRetryTable:
    """The retry table of the postgres backend, kept in memory.

    :class:`~kafka_retry.testing.TestConsumer` runs the postgres backend's own
    code (the store that inserts failures, the pollers that claim due rows with
    a lease, run the handlers and record the outcome) on this table instead of
    PostgreSQL. It keeps the table's semantics: rows have the same columns,
    claims take pending rows of one tier that are due and not leased, earliest
    first, and every write of a poller only changes rows still leased to it.

    Differences, on purpose: pollers are told of every row that becomes
    pending or is released, so an idle poller sleeps until the next due time
    instead of also looking every second; succeeded rows are kept (no
    maintenance task), so a test can look at them. The table never fails:
    test database outages against PostgreSQL.

    Args:
        clock: The table's clock, as PostgreSQL's ``now()`` is: it decides
            which rows are due and when leases run out, and gives
            ``created_at`` and ``updated_at``.
        where: The table's name in logs and metrics, ``schema.table``.
        cascade_dead_letters: Dead-letter a key's waiting rows with its head
            (``ordered_dead_letter="dead_letter"``).
    """

    def __init__(
        self,
        clock: Clock,
        where: str = "kafka_retry.kafka_consumer_retries",
        *,
        cascade_dead_letters: bool = False,
    ) -> None:
        self._clock = clock
        self._cascade = cascade_dead_letters
        self.where = where
        self.poll_cap: float | None = None
        self._rows: dict[int, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._listeners: list[Listener] = []
        self._version = 0

    def __repr__(self) -> str:
        return f"<MemoryRetryTable {self.where} rows={len(self._rows)}>"

    @property
    def version(self) -> int:
        """A counter that changes with every write."""
        return self._version

    # What a test looks at

    def rows(self, group: str | None = None) -> list[Mapping[str, Any]]:
        """Copies of the rows (of ``group``, if given) in insertion order, keyed by column."""
        return [dict(row) for row in self._rows.values() if group in (None, row["consumer_group"])]

    def counts(self, group: str) -> RetryCounts:
        """``group``'s rows per state (as :func:`kafka_retry.retry.postgres.counts` gives them)."""
        groups = Counter((row["state"], row["attempts"]) for row in self.rows(group))
        return RetryCounts.of((state, attempts, n) for (state, attempts), n in groups.items())

    def pending_work(self) -> str | None:
        """Why the backend is not idle, or None: rows due but not claimed, or claimed rows."""
        now = self._now()
        due = leased = 0
        for row in self._rows.values():
            if row["state"] not in (PENDING, WAITING):
                continue
            if _leased(row, now):
                leased += 1
            elif row["due_at"] <= now and self._is_head(row):
                due += 1
        reasons = []
        if due:
            reasons.append(f"{due} due")
        if leased:
            reasons.append(f"{leased} claimed by a poller")
        return f"retry table {self.where}: rows {', '.join(reasons)}" if reasons else None

    # The backend's side (see kafka_retry.retry._pg_table.RetryRows)

    def on_change(self, listener: Listener) -> None:
        """Call ``listener(tier, due)`` when a row becomes pending at ``tier``, or is released."""
        self._listeners.append(listener)

    async def insert(self, params: Sequence[object]) -> None:
        if len(params) != len(INSERT_COLUMNS):
            raise ValueError(f"{len(INSERT_COLUMNS)} values expected, got {len(params)}")
        row: dict[str, Any] = dict(zip(INSERT_COLUMNS, params, strict=True))
        names, values = row["header_names"], row["header_values"]
        if len(names) != len(values):  # the table's CHECK constraint
            raise ValueError(f"{len(names)} header names but {len(values)} values")
        row["header_names"], row["header_values"] = list(names), list(values)
        row_id = next(self._ids)
        now = self._now()
        row.update(id=row_id, claimed_until=None, claimed_by=None, created_at=now, updated_at=now)
        self._rows[row_id] = row
        self._version += 1
        if row["state"] in (PENDING, WAITING):
            self._tell(row)

    async def insert_many(self, rows: Sequence[Sequence[object]]) -> None:
        for params in rows:  # checked first: a bad row stores none, like a transaction
            if len(params) != len(INSERT_COLUMNS):
                raise ValueError(f"{len(INSERT_COLUMNS)} values expected, got {len(params)}")
        for params in rows:
            await self.insert(params)

    async def claim(
        self,
        group: str,
        tier: int,
        limit: int,
        lease: float,
        worker: str,
        topics: Sequence[str],
    ) -> list[Row]:
        # The table's clock plays PostgreSQL's now(): the pollers pass none of theirs.
        now = self._now()
        due = [
            row
            for row in self._waiting(group, tier, topics)
            if row["due_at"] <= now and not _leased(row, now) and self._is_head(row)
        ]
        due.sort(key=lambda row: (row["due_at"], row["id"]))
        claimed: list[Row] = []
        lease_end = self._lease_end(lease)
        for row in due[:limit]:
            row.update(state=PENDING, claimed_until=lease_end, claimed_by=worker, updated_at=now)
            claimed.append(dict(row))
        if claimed:
            self._version += 1
        return claimed

    async def due_in(self, group: str, tier: int, topics: Sequence[str]) -> float | None:
        now = self._now()
        later = [row["due_at"] for row in self._waiting(group, tier, topics) if row["due_at"] > now]
        if not later:
            return None
        return to_epoch_ms(min(later)) / 1000 - self._clock.time()

    async def extend(self, ids: Sequence[int], worker: str, tier: int, lease: float) -> None:
        lease_end = self._lease_end(lease)
        for row in self._ours(ids, worker, tier):
            row["claimed_until"] = lease_end

    async def write(self, outcome: Outcome, worker: str, tier: int) -> int:
        now = self._now()
        changed = 0
        for row in self._ours(outcome.succeeded, worker, tier):
            row.update(state=SUCCEEDED, attempts=row["attempts"] + 1)
            changed += _release(row, now)
        failed = zip(
            outcome.failed,
            outcome.states,
            outcome.due,
            outcome.failed_at,
            outcome.error_types,
            outcome.errors,
            outcome.spans,
            strict=True,
        )
        for row_id, state, due, failed_at, error_type, error, span in failed:
            for row in self._ours([row_id], worker, tier):
                row.update(
                    state=state,
                    attempts=row["attempts"] + 1,
                    due_at=due,
                    failed_at=failed_at,
                    last_error_type=error_type,
                    last_error=error,
                    last_span=span,
                )
                changed += _release(row, now)
                if state == PENDING:
                    self._tell(row)
        for row in self._ours(outcome.released, worker, tier):
            changed += _release(row, now)
            self._tell(row)
        if self._cascade:
            self._dead_letter_followers(outcome)
        if outcome.succeeded or outcome.failed:
            # A settled row may be a key's head: the rows behind it are claimable now.
            for listener in self._listeners:
                listener(0, now)
        self._version += 1
        return changed

    async def unsettled_keys(self, group: str, topic: str, partition: int) -> set[bytes]:
        return {
            row["message_key"]
            for row in self._rows.values()
            if row["consumer_group"] == group
            and row["main_topic"] == topic
            and row["kafka_partition"] == partition
            and row["state"] in (PENDING, WAITING)
            and row["key_hash"] is not None
        }

    def _is_head(self, row: Mapping[str, Any]) -> bool:
        """Whether no earlier row of ``row``'s key is unsettled (always, for a keyless row)."""
        if row["key_hash"] is None:
            return True
        # The id breaks ties, as in the SQL: a redelivered message may wait behind its own row.
        place = (row["kafka_partition"], row["kafka_offset"], row["id"])
        return not any(
            other["key_hash"] == row["key_hash"]
            and other["state"] in (PENDING, WAITING)
            and other["consumer_group"] == row["consumer_group"]
            and other["main_topic"] == row["main_topic"]
            and (other["kafka_partition"], other["kafka_offset"], other["id"]) < place
            for other in self._rows.values()
        )

    def _dead_letter_followers(self, outcome: Outcome) -> None:
        """Dead-letter the waiting rows behind every head that ``outcome`` dead-lettered."""
        now = self._now()
        for row_id, state in zip(outcome.failed, outcome.states, strict=True):
            head = self._rows.get(row_id)
            if state != DEAD_LETTERED or head is None or head["state"] != DEAD_LETTERED:
                continue
            if head["key_hash"] is None:
                continue
            for row in self._rows.values():
                if (
                    row["state"] == WAITING
                    and row["key_hash"] == head["key_hash"]
                    and row["consumer_group"] == head["consumer_group"]
                    and row["main_topic"] == head["main_topic"]
                ):
                    row.update(
                        state=DEAD_LETTERED,
                        last_error_type=head["last_error_type"],
                        last_error=head["last_error"],
                        failed_at=head["failed_at"],
                        updated_at=now,
                    )

    def _waiting(self, group: str, tier: int, topics: Sequence[str]) -> list[dict[str, Any]]:
        return [
            row
            for row in self._rows.values()
            if (row["state"] == PENDING or (tier == 0 and row["state"] == WAITING))
            and row["consumer_group"] == group
            and row["attempts"] == tier
            and row["main_topic"] in topics
        ]

    def _ours(self, ids: Sequence[int], worker: str, tier: int) -> list[dict[str, Any]]:
        """The rows of ``ids`` still pending at ``tier`` and leased to ``worker``."""
        rows = (self._rows.get(row_id) for row_id in ids)
        return [
            row
            for row in rows
            if row is not None
            and row["state"] == PENDING
            and row["attempts"] == tier
            and row["claimed_by"] == worker
        ]

    def _now(self) -> dt.datetime:
        return floor_datetime(self._clock.time())

    def _lease_end(self, lease: float) -> dt.datetime:
        return to_datetime(round((self._clock.time() + lease) * 1000))

    def _tell(self, row: Mapping[str, Any]) -> None:
        for listener in self._listeners:
            listener(row["attempts"], row["due_at"])


def _leased(row: Mapping[str, Any], now: dt.datetime) -> bool:
    until: dt.datetime | None = row["claimed_until"]
    return until is not None and until > now


def _release(row: dict[str, Any], now: dt.datetime) -> int:
    row.update(claimed_until=None, claimed_by=None, updated_at=now)
    return 1
