"""Circuit breakers: one per main topic, shared by every tier that calls its handler.

A breaker counts the outcomes of the topic's last ``window`` handler calls.
When the share of retryable failures reaches ``failure_ratio`` it opens:
callers wait in :meth:`Breaker.admit` instead of starting a handler call, so
their workers stop taking records, their buffers fill and the tiers pause the
partitions while polling goes on. After ``open_for`` seconds one call (the
probe) is let through; its outcome closes the breaker or opens it again for
twice as long, up to ``max_open_for``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kafka_retry._clock import Cancellable, Clock
from kafka_retry.config import CircuitBreaker

__all__ = ["Breaker", "BreakerState", "Breakers"]

log = logging.getLogger("kafka_retry")


class BreakerState(enum.IntEnum):
    """The states of a breaker, valued as the ``kafka_retry_circuit_state`` gauge."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


#: Told ``(topic, state)`` at each change of state.
StateListener = Callable[[str, BreakerState], None]


class Breaker:
    """The breaker of one main topic.

    Args:
        topic: The main topic.
        settings: Ratio, window and open times.
        clock: Runs the open timer.
        on_change: Called at each change of state (the metric).
    """

    def __init__(
        self,
        topic: str,
        settings: CircuitBreaker,
        clock: Clock,
        on_change: StateListener | None = None,
    ) -> None:
        self.topic = topic
        self.state = BreakerState.CLOSED
        self._settings = settings
        self._clock = clock
        self._on_change = on_change
        # True for each failed call of the window, False for each success.
        self._window: deque[bool] = deque(maxlen=settings.window)
        self._failed = 0
        self._open_for = settings.open_for
        self._timer: Cancellable | None = None
        self._probing = False
        self._changed = asyncio.Event()
        self._waiting: set[asyncio.Task[object]] = set()

    @property
    def closed(self) -> bool:
        """Whether calls start freely."""
        return self.state is BreakerState.CLOSED

    async def admit(self) -> bool:
        """Wait until a call may start; return True when the call is the half-open probe.

        Returns at once while the breaker is closed.
        """
        task = asyncio.current_task()
        if task is not None:
            self._waiting.add(task)
        try:
            while True:
                if self.state is BreakerState.CLOSED:
                    return False
                if self.state is BreakerState.HALF_OPEN and not self._probing:
                    self._probing = True
                    return True
                self._changed.clear()
                await self._changed.wait()
        finally:
            if task is not None:
                self._waiting.discard(task)

    def record(self, failed: bool, probe: bool) -> None:
        """Count the outcome of a call that :meth:`admit` let start.

        Args:
            failed: The call failed with a retryable error.
            probe: The call was the half-open probe.
        """
        if probe:
            self._probing = False
            if failed:
                self._open(min(self._open_for * 2, self._settings.max_open_for))
            else:
                self._close()
            return
        if self.state is not BreakerState.CLOSED:
            # A call that started before the breaker opened: its outcome is old news.
            return
        window = self._window
        if len(window) == window.maxlen and window[0]:
            self._failed -= 1
        window.append(failed)
        self._failed += failed
        full = len(window) == window.maxlen
        if full and self._failed >= self._settings.failure_ratio * len(window):
            self._open(self._settings.open_for)

    def abandon_probe(self) -> None:
        """The probe ended without an outcome (cancelled): the next caller probes instead."""
        self._probing = False
        self._changed.set()

    def holds(self, task: asyncio.Task[Any]) -> bool:
        """Whether ``task`` waits here to start a call (it has not called its handler)."""
        return task in self._waiting

    def cancel_waiting(self) -> None:
        """Cancel the tasks waiting to start a call: at shutdown, their records are redelivered."""
        for task in list(self._waiting):
            task.cancel()

    def stop(self) -> None:
        """Cancel the open timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _open(self, open_for: float) -> None:
        self._open_for = open_for
        self._set(BreakerState.OPEN, f"opened for {open_for:g}s")
        self.stop()
        self._timer = self._clock.call_later(open_for, self._half_open)

    def _half_open(self) -> None:
        self._timer = None
        self._set(BreakerState.HALF_OPEN, "half-open: one call goes through")

    def _close(self) -> None:
        self._window.clear()
        self._failed = 0
        self._open_for = self._settings.open_for
        self._set(BreakerState.CLOSED, "closed")

    def _set(self, state: BreakerState, what: str) -> None:
        previous, self.state = self.state, state
        self._changed.set()
        if state is not previous:
            log.info(
                "circuit breaker of %s %s",
                self.topic,
                what,
                extra={"topic": self.topic, "circuit_state": state.name.lower()},
            )
        if self._on_change is not None:
            self._on_change(self.topic, state)


class Breakers:
    """The breakers of one consumer, by main topic; empty when the breaker is off.

    Args:
        settings: ``Config.circuit_breaker``; None means no breakers.
        topics: The main topics.
        clock: Runs the open timers.
        on_change: Called at each change of state of any breaker.
    """

    def __init__(
        self,
        settings: CircuitBreaker | None,
        topics: Iterable[str],
        clock: Clock,
        on_change: StateListener | None = None,
    ) -> None:
        self.by_topic: Mapping[str, Breaker] = (
            {}
            if settings is None
            else {topic: Breaker(topic, settings, clock, on_change) for topic in topics}
        )

    def get(self, topic: str) -> Breaker | None:
        """The breaker of main topic ``topic``, or None."""
        return self.by_topic.get(topic)

    def states(self) -> dict[str, str]:
        """Each topic's state by name (``closed``, ``open``, ``half_open``), for health."""
        return {topic: b.state.name.lower() for topic, b in sorted(self.by_topic.items())}

    def holds(self, task: asyncio.Task[Any]) -> bool:
        """Whether ``task`` waits at one of the breakers to start a call."""
        return any(breaker.holds(task) for breaker in self.by_topic.values())

    def cancel_waiting(self) -> None:
        """Cancel every task waiting at a breaker (the consumer is stopping)."""
        for breaker in self.by_topic.values():
            breaker.cancel_waiting()

    def stop(self) -> None:
        """Cancel every open timer."""
        for breaker in self.by_topic.values():
            breaker.stop()
