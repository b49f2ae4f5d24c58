""":func:`consume_until`: run a consumer until a condition holds, for tests against real Kafka."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping

from kafka_retry._typed import AnyHandler
from kafka_retry.config import Config
from kafka_retry.runtime.consumer import Consumer

__all__ = ["consume_until"]

# How often a callable condition is looked at; an Event is awaited instead.
_POLL = 0.02


async def consume_until(
    consumer: Consumer | Config,
    condition: Callable[[], bool] | asyncio.Event,
    timeout: float,  # noqa: ASYNC109 - returns False at the bound, a cancel scope cannot
    handlers: Mapping[str, AnyHandler] | None = None,
) -> bool:
    """Run a consumer until ``condition`` holds or ``timeout`` seconds pass.

    The consumer always stops cleanly before this returns: in-flight handlers
    finish (within ``drain_timeout``), done offsets are committed, clients
    close. The timeout counts from the call, so it includes joining the group.
    A condition that already holds returns at once without starting anything.

    Args:
        consumer: A consumer that has not run yet, or a Config to build one from.
        condition: A callable checked every 20 ms, or an event to wait for.
        timeout: Seconds to wait at most.
        handlers: Handlers per main topic; only with a Config.

    Returns:
        Whether the condition held.

    Raises:
        TypeError: Handlers were given with a Consumer (it has its own).
        ConsumerStateError: The consumer ran before.
        KafkaRetryError: What the consumer failed with (setup, Kafka unreachable, a crash).
    """
    if isinstance(consumer, Consumer):
        if handlers is not None:
            raise TypeError("pass handlers with a Config; a Consumer has its own")
    else:
        consumer = Consumer(consumer, handlers)
    if _holds(condition):
        await consumer.stop()
        return True
    task = asyncio.create_task(consumer.run(), name="kafka-retry:consume-until")
    try:
        held = await _wait(condition, task, timeout)
    except BaseException:
        await _stop(consumer, task, quiet=True)
        raise
    await _stop(consumer, task, quiet=False)
    return held or _holds(condition)


def _holds(condition: Callable[[], bool] | asyncio.Event) -> bool:
    if isinstance(condition, asyncio.Event):
        return condition.is_set()
    return bool(condition())


async def _wait(
    condition: Callable[[], bool] | asyncio.Event, task: asyncio.Task[None], seconds: float
) -> bool:
    """Wait for the condition, the consumer ending (an error or a stop), or the timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    event_waiter = None
    if isinstance(condition, asyncio.Event):
        event_waiter = asyncio.ensure_future(condition.wait())
    try:
        while not _holds(condition):
            remaining = deadline - loop.time()
            if remaining <= 0 or task.done():
                return False
            waiters = {task} if event_waiter is None else {task, event_waiter}
            step = remaining if event_waiter is not None else min(_POLL, remaining)
            await asyncio.wait(waiters, timeout=step, return_when=asyncio.FIRST_COMPLETED)
        return True
    finally:
        if event_waiter is not None:
            event_waiter.cancel()


async def _stop(consumer: Consumer, task: asyncio.Task[None], *, quiet: bool) -> None:
    """Stop the consumer and wait for it; re-raise its error unless ``quiet``."""
    consumer.request_stop()
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            # Cancelled while it drains: cut the drain short, then go.
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise
        # Otherwise the consumer's own task was cancelled: it is stopped already.
    except Exception:
        if not quiet:
            raise
