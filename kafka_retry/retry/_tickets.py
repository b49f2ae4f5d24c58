"""Hand-offs without a task each: the failures that ride one batch write share one future.

A storm hands failures on faster than a task, a coroutine chain and a future
per failure allow. A backend that batches its writes (Kafka's per-partition
batches, PostgreSQL's group commit) instead appends each failure to the open
batch and gives back a :class:`Ticket` of that batch: one future for the failures
of one source partition on it, done once the batch is durably stored. (Per
source partition: a worker that stops cancels its own ticket, never the
future another worker waits on.) If the write fails, each of its
failures is handed on again on its own, by the backend's ordinary (retrying)
path, and the ticket is done when all of them are stored; so the guarantee is
the one of ``await backend.schedule(failure)``: done means stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from kafka_retry.retry.base import Failure

__all__ = ["Ticket", "ride"]

#: The ordinary hand-off of one failure: retried until stored, or cancelled.
Resend = Callable[[Failure], Coroutine[Any, Any, None]]


class Ticket:
    """The failures riding one batch write, and the future they share.

    Args:
        receipt: The batch write's own outcome: a result once stored, an
            exception (or cancellation) if the write failed.
        resend: Hands one failure on by the ordinary path, after a failed write.
    """

    __slots__ = ("_resend", "failures", "future")

    def __init__(self, receipt: asyncio.Future[Any], resend: Resend) -> None:
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.failures: list[Failure] = []
        self._resend = resend
        receipt.add_done_callback(self._written)

    def _written(self, receipt: asyncio.Future[Any]) -> None:
        if self.future.done():  # cancelled by its holder: nothing waits for it
            return
        if not receipt.cancelled() and receipt.exception() is None:
            self.future.set_result(None)
            return
        # Failed (or cancelled with the writer): each failure goes on its own way,
        # with the backoff and fallbacks of the ordinary path.
        task = asyncio.ensure_future(self._again())
        self.future.add_done_callback(lambda _: task.cancel())

    async def _again(self) -> None:
        try:
            await asyncio.gather(*(self._resend(failure) for failure in self.failures))
        except BaseException as exc:
            if not self.future.done():
                if isinstance(exc, asyncio.CancelledError):
                    self.future.cancel()
                else:
                    self.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        if not self.future.done():
            self.future.set_result(None)


def ride(
    tickets: dict[Any, Any], receipt: asyncio.Future[Any], failure: Failure, resend: Resend
) -> asyncio.Future[None]:
    """Put ``failure`` on the batch whose ``tickets`` and ``receipt`` these are; its future.

    One ticket per source partition of the batch: a new one for a source not
    seen yet, or whose ticket a stopped worker gave up (cancelled).
    """
    message = failure.message
    source = (message.topic, message.partition)
    ticket = tickets.get(source)
    if ticket is None or ticket.future.done():
        ticket = tickets[source] = Ticket(receipt, resend)
    ticket.failures.append(failure)
    return ticket.future
