"""VirtualClock: stands still, moves when told, fires timers in order on the loop."""

from __future__ import annotations

import asyncio

import pytest

from kafka_retry.testing import VirtualClock


async def test_stands_still_until_advanced() -> None:
    """Time does not move by itself; advance() moves it by exactly that much."""
    clock = VirtualClock(start=1000.0)
    await asyncio.sleep(0.01)
    assert clock.time() == 1000.0
    clock.advance(60)
    assert clock.time() == 1060.0
    assert clock.advanced == 60


async def test_timers_fire_in_due_order_at_the_next_await() -> None:
    """Due timers run on the loop, earliest first; later ones wait."""
    clock = VirtualClock(start=0.0)
    fired: list[str] = []
    clock.call_later(30, lambda: fired.append("30"))
    clock.call_later(10, lambda: fired.append("10"))
    clock.call_later(90, lambda: fired.append("90"))
    clock.advance(40)
    assert fired == []  # scheduled on the loop, like loop.call_later callbacks
    await asyncio.sleep(0)
    assert fired == ["10", "30"]
    assert clock.pending == 1
    assert clock.next_due == 90.0


async def test_cancelled_timer_never_fires() -> None:
    """cancel() removes a timer, twice is harmless."""
    clock = VirtualClock(start=0.0)
    fired: list[int] = []
    timer = clock.call_later(5, lambda: fired.append(1))
    timer.cancel()
    timer.cancel()
    clock.advance(10)
    await asyncio.sleep(0)
    assert fired == []
    assert clock.pending == 0
    assert clock.next_due is None


async def test_advance_to_next_timer_lands_on_its_due_time() -> None:
    """The clock jumps exactly to the next due time; None when nothing waits."""
    clock = VirtualClock(start=100.0)
    assert clock.advance_to_next_timer() is None
    clock.call_later(0.3, lambda: None)
    assert clock.advance_to_next_timer() == pytest.approx(0.3)
    assert clock.time() == 100.3


async def test_sleep_returns_when_the_clock_reaches_its_end() -> None:
    """sleep() waits on clock time, not real time."""
    clock = VirtualClock(start=0.0)
    sleeper = asyncio.create_task(clock.sleep(3600))
    await asyncio.sleep(0)
    assert not sleeper.done()
    clock.advance(3599)
    await asyncio.sleep(0)
    assert not sleeper.done()
    clock.advance(1)
    await asyncio.wait_for(sleeper, 1)
    assert clock.pending == 0


async def test_zero_delay_fires_without_advance() -> None:
    """A timer due now fires on the loop even though the clock stands still."""
    clock = VirtualClock(start=0.0)
    await asyncio.wait_for(clock.sleep(0), 1)


async def test_decimal_steps_reach_a_due_time() -> None:
    """59.999 s then 0.001 s reaches a 60 s timer despite float rounding."""
    clock = VirtualClock(start=1_700_000_000.123)
    fired: list[float] = []
    clock.call_later(60, lambda: fired.append(clock.time()))
    clock.advance(59.999)
    await asyncio.sleep(0)
    assert fired == []
    clock.advance(0.001)
    await asyncio.sleep(0)
    assert len(fired) == 1
    assert int(fired[0] * 1000) >= 1_700_000_060_123


async def test_flowing_clock_fires_as_real_time_passes() -> None:
    """With flowing=True a short timer fires by itself, and advance() still jumps."""
    clock = VirtualClock(flowing=True)
    before = clock.time()
    await asyncio.wait_for(clock.sleep(0.02), 1)
    assert clock.time() - before >= 0.02
    clock.advance(100)
    assert clock.time() - before >= 100


def test_negative_advance_is_refused() -> None:
    """Time does not go back."""
    with pytest.raises(ValueError, match="back"):
        VirtualClock().advance(-1)
