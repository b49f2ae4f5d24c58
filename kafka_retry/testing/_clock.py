"""A virtual clock: the consumer's delays run on time that a test moves forward."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable

__all__ = ["VirtualClock"]

# Timers due this close after the clock's reading fire with it: sums of decimal
# advances (59.999 + 0.001) can fall an ulp short of the due time they aim at.
TIMER_TOLERANCE = 1e-6


class _Timer:
    """One pending ``call_later``; ordered by due time, then by creation."""

    __slots__ = ("_clock", "callback", "cancelled", "due", "loop", "seq")

    def __init__(
        self,
        clock: VirtualClock,
        due: float,
        seq: int,
        callback: Callable[[], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._clock = clock
        self.due = due
        self.seq = seq
        self.callback = callback
        self.loop = loop
        self.cancelled = False

    def __lt__(self, other: _Timer) -> bool:
        return (self.due, self.seq) < (other.due, other.seq)

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self._clock._forget(self)


class VirtualClock:
    """A clock for tests that stands still until a test moves it.

    Implements the consumer's clock interface (``time``, ``call_later``,
    ``sleep``), so every delay of the runtime (retry due times, commit interval,
    back-off) is measured on it: ``advance(60)`` makes a 60-second retry due at
    once, without waiting. Timers fire in due order, on the event loop, like
    the loop's own. Standing still makes timestamps, due times and "not before"
    checks exact, as with trio's ``MockClock`` or tokio's paused time.

    Args:
        start: The epoch time (seconds) the clock reads at first; default: now.
        flowing: Also move at the real pace between advances (wall time plus
            the advances), for code that waits in real time for the clock.
    """

    def __init__(self, start: float | None = None, *, flowing: bool = False) -> None:
        # The reading at monotonic instant _base_mono; flowing adds the real time since.
        self._base = time.time() if start is None else float(start)
        self._base_mono = time.monotonic()
        self._flowing = flowing
        self._advanced = 0.0
        self._heap: list[_Timer] = []
        self._live = 0
        self._seq = itertools.count()
        self._wakeup: asyncio.TimerHandle | None = None
        self._version = 0

    def __repr__(self) -> str:
        return f"<VirtualClock time={self.time():.3f} timers={self._live}>"

    def time(self) -> float:
        """Seconds since the epoch on this clock."""
        if not self._flowing:
            return self._base
        return self._base + (time.monotonic() - self._base_mono)

    @property
    def advanced(self) -> float:
        """Seconds this clock was moved forward in total (real time flowing not counted)."""
        return self._advanced

    @property
    def pending(self) -> int:
        """How many timers (``call_later``, ``sleep``) wait to fire."""
        return self._live

    @property
    def next_due(self) -> float | None:
        """When the earliest pending timer fires (clock time), or None."""
        self._drop_cancelled()
        return self._heap[0].due if self._heap else None

    @property
    def version(self) -> int:
        """A counter that changes whenever a timer is added, cancelled or fired."""
        return self._version

    def call_later(self, delay: float, callback: Callable[[], None]) -> _Timer:
        """Run ``callback`` once ``delay`` seconds of this clock have passed.

        Must be called with an event loop running; the callback runs on it.
        Returns a handle with ``cancel()``.
        """
        loop = asyncio.get_running_loop()
        timer = _Timer(self, self.time() + max(0.0, delay), next(self._seq), callback, loop)
        heapq.heappush(self._heap, timer)
        self._live += 1
        self._version += 1
        self._schedule_wakeup()
        return timer

    async def sleep(self, seconds: float) -> None:
        """Wait until ``seconds`` of this clock have passed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        timer = self.call_later(seconds, wake)
        try:
            await future
        finally:
            timer.cancel()

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward and fire the timers now due.

        The callbacks of due timers are scheduled on the event loop (in due
        order), so they run at the caller's next ``await``.

        Raises:
            ValueError: ``seconds`` is negative; time does not go back.
        """
        if seconds < 0:
            raise ValueError(f"cannot move the clock back ({seconds} s)")
        self._base += seconds
        self._advanced += seconds
        self._fire_due()

    def advance_to_next_timer(self) -> float | None:
        """Jump to the due time of the earliest timer and fire it.

        Returns:
            How far the clock moved (0 if that timer was already due), or None
            when no timer is pending.
        """
        due = self.next_due
        if due is None:
            return None
        step = max(0.0, due - self.time())
        self._advanced += step
        if self._flowing:
            self._base += step
        else:
            # Land exactly on the due time: float sums would miss it by an ulp.
            self._base = max(self._base, due)
        self._fire_due()
        return step

    def _forget(self, timer: _Timer) -> None:
        self._live -= 1
        self._version += 1

    def _drop_cancelled(self) -> None:
        while self._heap and self._heap[0].cancelled:
            heapq.heappop(self._heap)

    def _fire_due(self) -> None:
        now = self.time()
        self._drop_cancelled()
        while self._heap and self._heap[0].due <= now + TIMER_TOLERANCE:
            timer = heapq.heappop(self._heap)
            if not self._flowing and timer.due > self._base:
                self._base = timer.due  # then the callback finds its due time reached
            timer.cancel()  # counts it as gone; a late cancel() is then a no-op
            if not timer.loop.is_closed():
                timer.loop.call_soon(timer.callback)
            self._drop_cancelled()
        self._schedule_wakeup()

    def _schedule_wakeup(self) -> None:
        """Keep one loop timer for the earliest timer that is due now or by time flowing."""
        if self._wakeup is not None:
            self._wakeup.cancel()
            self._wakeup = None
        self._drop_cancelled()
        if not self._heap:
            return
        first = self._heap[0]
        delay = first.due - self.time()
        if first.loop.is_closed() or (delay > 0 and not self._flowing):
            return  # a clock standing still reaches it only by an advance
        self._wakeup = first.loop.call_later(max(0.0, delay), self._fire_due)
