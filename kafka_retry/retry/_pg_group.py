"""Group commit: the failures of every partition go to the retry table a batch per transaction.

One ``INSERT`` round trip per failure caps a storm at a few hundred rows a
second. Here each caller adds its row and waits; a writer task takes what has
gathered (up to ``max_rows``), writes it in one transaction, and settles every
caller of the batch together: each returns only once its row is committed, or
raises what the transaction raised (and retries, as before). Rows arriving
during a write form the next batch, so batches grow with the load.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any

from kafka_retry.retry._pg_table import RetryRows

__all__ = ["GroupCommit", "RowBatch"]

#: Rows written in one transaction at most.
MAX_ROWS = 5000


class RowBatch:
    """Rows that one transaction writes, and the future of its commit.

    Attributes:
        receipt: Done when the transaction committed; its exception (or
            cancellation) when it failed, and then none of the rows is stored.
        tickets: What the batch's riders share, per source (see :mod:`._tickets`).
    """

    __slots__ = ("owners", "receipt", "rows", "tickets")

    def __init__(self) -> None:
        self.rows: list[Sequence[object]] = []
        #: Per row, the caller that wants it, if it may give up (then it is left out).
        self.owners: list[asyncio.Future[None] | None] = []
        self.receipt: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.tickets: dict[Any, Any] = {}


class GroupCommit:
    """Batches inserts into ``rows`` from any number of concurrent callers.

    Args:
        rows: The retry table.
        max_rows: The most rows one transaction writes.
    """

    def __init__(self, rows: RetryRows, max_rows: int = MAX_ROWS) -> None:
        self._rows = rows
        self._max_rows = max_rows
        self._queue: deque[RowBatch] = deque()
        self._writer: asyncio.Task[None] | None = None

    def add(self, params: Sequence[object], owner: asyncio.Future[None] | None = None) -> RowBatch:
        """Queue one row; return the batch it joined, whose receipt says when it is committed.

        ``owner``, when given, is the caller's own future: cancelled before the
        write, it leaves its row out.
        """
        queue = self._queue
        if not queue or len(queue[-1].rows) >= self._max_rows:
            queue.append(RowBatch())
        batch = queue[-1]
        batch.rows.append(params)
        batch.owners.append(owner)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write())
        return batch

    async def insert(self, params: Sequence[object]) -> None:
        """Insert one row with the others gathered meanwhile; return once it is committed.

        Raises:
            Exception: What the batch's transaction raised; none of its rows is stored.
        """
        wanted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            await asyncio.shield(self.add(params, wanted).receipt)
        finally:
            wanted.cancel()  # done waiting (or given up): a row not yet written is not wanted

    async def _write(self) -> None:
        try:
            # One turn of the loop: the failures handled with this one add theirs.
            await asyncio.sleep(0)
            while self._queue:
                await self._commit(self._queue.popleft())
        finally:
            self._writer = None
            for batch in self._queue:  # cancelled: nobody may wait forever
                batch.receipt.cancel()
            self._queue.clear()

    async def _commit(self, batch: RowBatch) -> None:
        live = [
            params
            for params, owner in zip(batch.rows, batch.owners, strict=True)
            if owner is None or not owner.done()
        ]
        try:
            if live:
                await self._rows.insert_many(live)
        except Exception as exc:
            batch.receipt.set_exception(exc)
            batch.receipt.exception()  # its riders are told; unheard, it is no news for the log
            return
        except BaseException:
            batch.receipt.cancel()
            raise
        batch.receipt.set_result(None)
