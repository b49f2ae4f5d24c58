"""Group commit of retry rows: concurrent inserts share a transaction and its outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from kafka_retry.retry._pg_group import GroupCommit


class Recording:
    """Records each insert_many call; fails the calls listed in ``fail``."""

    def __init__(self, fail: set[int] | None = None) -> None:
        self.calls: list[list[Sequence[object]]] = []
        self.fail = fail or set()

    async def insert_many(self, rows: Sequence[Sequence[object]]) -> None:
        self.calls.append(list(rows))
        await asyncio.sleep(0)
        if len(self.calls) in self.fail:
            raise ConnectionResetError("database went away")


async def test_concurrent_inserts_are_one_transaction_and_return_after_it() -> None:
    """100 callers at once: one insert_many with every row; each returns once it committed."""
    table = Recording()
    commits = GroupCommit(table)  # type: ignore[arg-type]
    await asyncio.gather(*(commits.insert((n,)) for n in range(100)))
    assert [len(call) for call in table.calls] == [100]


async def test_batches_are_bounded_and_rows_arriving_meanwhile_make_the_next() -> None:
    """Up to max_rows per transaction; the rest follow in order."""
    table = Recording()
    commits = GroupCommit(table, max_rows=40)  # type: ignore[arg-type]
    await asyncio.gather(*(commits.insert((n,)) for n in range(100)))
    assert [len(call) for call in table.calls] == [40, 40, 20]
    assert [row[0] for call in table.calls for row in call] == list(range(100))


async def test_a_failed_transaction_fails_every_caller_of_its_batch() -> None:
    """Nobody's row is taken as stored when its transaction failed."""
    table = Recording(fail={1})
    commits = GroupCommit(table)  # type: ignore[arg-type]
    results = await asyncio.gather(
        *(commits.insert((n,)) for n in range(5)), return_exceptions=True
    )
    assert all(isinstance(result, ConnectionResetError) for result in results)
    await commits.insert((5,))  # the next batch is a new transaction
    assert [len(call) for call in table.calls] == [5, 1]


async def test_a_cancelled_caller_is_left_out_of_the_transaction() -> None:
    """A hand-off cancelled before the write (the drain timeout) writes no row."""
    table = Recording()
    commits = GroupCommit(table)  # type: ignore[arg-type]
    first = asyncio.create_task(commits.insert((1,)))
    second = asyncio.create_task(commits.insert((2,)))
    await asyncio.sleep(0)
    first.cancel()
    await second
    with pytest.raises(asyncio.CancelledError):
        await first
    assert table.calls == [[(2,)]]
