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
from collections.abc import Sequence

from kafka_retry.retry._pg_table import RetryRows

__all__ = ["GroupCommit"]

#: Rows written in one transaction at most.
MAX_ROWS = 1000


class GroupCommit:
    """Batches inserts into ``rows`` from any number of concurrent callers.

    Args:
        rows: The retry table.
        max_rows: The most rows one transaction writes.
    """

    def __init__(self, rows: RetryRows, max_rows: int = MAX_ROWS) -> None:
        self._rows = rows
        self._max_rows = max_rows
        self._pending: list[tuple[Sequence[object], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def insert(self, params: Sequence[object]) -> None:
        """Insert one row with the others gathered meanwhile; return once it is committed.

        Raises:
            Exception: What the batch's transaction raised; none of its rows is stored.
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((params, done))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write())
        await done

    async def _write(self) -> None:
        try:
            # One turn of the loop: the failures handled with this one add theirs.
            await asyncio.sleep(0)
            while self._pending:
                batch = self._pending[: self._max_rows]
                del self._pending[: self._max_rows]
                await self._commit(batch)
        finally:
            self._writer = None
            for _params, done in self._pending:  # cancelled: no caller may wait forever
                done.cancel()
            self._pending.clear()

    async def _commit(self, batch: list[tuple[Sequence[object], asyncio.Future[None]]]) -> None:
        live = [(params, done) for params, done in batch if not done.cancelled()]
        if not live:
            return
        try:
            await self._rows.insert_many([params for params, _ in live])
        except Exception as exc:
            for _params, done in live:
                if not done.done():
                    done.set_exception(exc)
            return
        except BaseException:
            for _params, done in live:
                done.cancel()
            raise
        for _params, done in live:
            if not done.done():
                done.set_result(None)
