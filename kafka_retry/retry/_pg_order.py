"""Ordered retries on the main tier: which keys must wait, known in memory per partition.

With ``Config(ordered_retries=True)`` a message whose key has an unsettled row
(pending or waiting) in the retry table is stored behind it as ``waiting``
instead of being handled. Asking the table per message would put a query on
the hot path, so :class:`KeyGate` keeps, per held partition, the keys with
unsettled rows (the key bytes themselves: a set lookup of bytes is cheaper than
the table's hash, which is computed only for rows stored):

* loaded from the table the first time the partition's records are seen after
  it was assigned;
* added to, synchronously, when a failure is routed to the table (before its
  insert starts, so the next message of that key, taken while the insert
  runs, already waits) and when a message is stored as waiting;
* pruned from the table when a message of a listed key comes and the list is
  older than :data:`REFRESH_AFTER`: rows settle on any instance's pollers.

The list may hold settled keys (their messages then wait one poll for
nothing, never out of order); it never misses an unsettled one, because a
refresh keeps every key added or still being inserted while it ran.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from kafka_retry._clock import Clock
from kafka_retry.message import Message
from kafka_retry.retry._pg_connect import TRANSIENT, Backoff
from kafka_retry.retry._pg_rows import WAITING_ERROR
from kafka_retry.retry._pg_table import RetryRows
from kafka_retry.retry.base import BatchCall, Failure, HandOff, MessageCall

log = logging.getLogger("kafka_retry")

#: Seconds after which a partition's list of waiting keys is pruned from the table, when used.
REFRESH_AFTER = 1.0

_Partition = tuple[str, int]


class KeyGate:
    """The :class:`~kafka_retry.retry.base.KeyOrder` of the postgres backend.

    Args:
        rows: The retry table.
        group: The consumer group.
        store_waiting: Durably stores a message as waiting (the store's insert,
            retried until it is committed).
        clock: Time source (refresh ages, load backoff).
    """

    def __init__(
        self,
        rows: RetryRows,
        group: str,
        store_waiting: Callable[[Failure], Awaitable[None]],
        clock: Clock,
    ) -> None:
        self._rows = rows
        self._group = group
        self._store_waiting = store_waiting
        self._clock = clock
        self._keys: dict[_Partition, set[bytes]] = {}
        self._loaded_at: dict[_Partition, float] = {}
        self._loading: dict[_Partition, asyncio.Future[set[bytes]]] = {}
        # Per partition, key -> generation it was last added at (see _refresh).
        self._added: dict[_Partition, dict[bytes, int]] = {}
        self._generation = 0
        # Rows being inserted (hand-offs, waiting rows), per (partition, key).
        self._inserting: dict[tuple[str, int, bytes], list[asyncio.Event]] = {}

    def assigned(self, topic: str, partition: int) -> None:
        tp = (topic, partition)
        self._keys.pop(tp, None)
        self._added.pop(tp, None)
        self._loaded_at.pop(tp, None)

    def wrap_call(self, call: MessageCall) -> MessageCall:
        async def gated(message: Message) -> BaseException | None:
            if message.key is not None and await self._must_wait(message):
                await self._wait_behind(message)
                return None
            return await call(message)

        return gated

    def wrap_batch(self, call: BatchCall) -> BatchCall:
        async def gated(messages: list[Message]) -> list[BaseException | None] | None:
            waits = [m.key is not None and await self._must_wait(m) for m in messages]
            if not any(waits):
                return await call(messages)
            for message, wait in zip(messages, waits, strict=True):
                if wait:
                    await self._wait_behind(message)
            rest = [m for m, wait in zip(messages, waits, strict=True) if not wait]
            errors = await call(rest) if rest else None
            if errors is None:
                return None
            handled = iter(errors)
            return [None if wait else next(handled) for wait in waits]

        return gated

    def routed(self, failure: Failure, handoff: HandOff) -> HandOff:
        message = failure.message
        if failure.final or message.key is None:
            return handoff  # a dead letter settles the row at once: nothing waits behind it
        key = message.key
        tp = (message.topic, message.partition)
        self._add(tp, key)
        finished = self._inserting_row(tp, key)

        async def tracked() -> None:
            try:
                await handoff
            finally:
                finished()

        return tracked()

    def _inserting_row(self, tp: _Partition, key: bytes) -> Callable[[], None]:
        """Note a row of ``key`` being inserted; return what to call once it is done."""
        done = asyncio.Event()
        inserting = self._inserting.setdefault((*tp, key), [])
        inserting.append(done)

        def finished() -> None:
            done.set()
            inserting.remove(done)
            if not inserting:
                self._inserting.pop((*tp, key), None)

        return finished

    async def _must_wait(self, message: Message) -> bool:
        tp = (message.topic, message.partition)
        keys = self._keys.get(tp)
        if keys is None:
            keys = await self._load(tp)
        if message.key not in keys:
            return False  # the common case: one dict and one set lookup
        if self._clock.time() - self._loaded_at.get(tp, 0.0) >= REFRESH_AFTER:
            keys = await self._load(tp)
        return message.key in keys

    async def _wait_behind(self, message: Message) -> None:
        """Store ``message`` as waiting, once the rows of its key being inserted are in."""
        key = message.key
        assert key is not None
        tp = (message.topic, message.partition)
        for done in list(self._inserting.get((*tp, key), ())):
            # The claim orders a key's rows by offset, but only among committed
            # rows: this one must not be claimable before the row ahead of it.
            await done.wait()
        self._add(tp, key)
        finished = self._inserting_row(tp, key)
        try:
            await self._store_waiting(
                Failure(
                    message=message,
                    error_type=WAITING_ERROR,
                    error_message="waits behind an earlier message of its key",
                    failed_at=int(self._clock.time() * 1000),
                    group=self._group,
                    final=False,
                )
            )
        finally:
            finished()

    def _add(self, tp: _Partition, key: bytes) -> None:
        self._generation += 1
        self._keys.setdefault(tp, set()).add(key)
        self._added.setdefault(tp, {})[key] = self._generation

    async def _load(self, tp: _Partition) -> set[bytes]:
        """The partition's keys with unsettled rows, read from the table (one read at a time)."""
        loading = self._loading.get(tp)
        if loading is None:
            loading = asyncio.ensure_future(self._refresh(tp))
            self._loading[tp] = loading
            loading.add_done_callback(lambda _: self._loading.pop(tp, None))
        return await asyncio.shield(loading)

    async def _refresh(self, tp: _Partition) -> set[bytes]:
        started = self._generation
        found = await self._read(tp)
        # Keys added while the read ran, or whose insert is not committed yet,
        # may be missing from it; they stay.
        added = self._added.setdefault(tp, {})
        recent = {k for k, generation in added.items() if generation > started}
        inserting = {k for (topic, partition, k) in self._inserting if (topic, partition) == tp}
        keys = found | recent | inserting
        self._added[tp] = {k: g for k, g in added.items() if g > started}
        self._keys[tp] = keys
        self._loaded_at[tp] = self._clock.time()
        return keys

    async def _read(self, tp: _Partition) -> set[bytes]:
        backoff = Backoff()
        while True:
            try:
                return await self._rows.unsettled_keys(self._group, *tp)
            except TRANSIENT as exc:
                delay = backoff.delay()
                log.warning(
                    "reading the waiting keys of %s[%d] failed (%s: %s); retrying in %.1fs",
                    *tp,
                    type(exc).__name__,
                    exc,
                    delay,
                    extra={"topic": tp[0], "error_type": type(exc).__name__},
                )
                await self._clock.sleep(delay)
