"""The circuit breaker's states, in-place retries and their settings, on a virtual clock."""

from __future__ import annotations

import asyncio
import logging

import pytest

from kafka_retry import CircuitBreaker, Config, ConfigError, Message, NonRetryableError
from kafka_retry.runtime._guard import gated, retrying
from kafka_retry.runtime.breaker import Breaker, BreakerState
from kafka_retry.testing import VirtualClock

SETTINGS = CircuitBreaker(failure_ratio=0.5, window=4, open_for=10.0, max_open_for=25.0)
MESSAGE = Message("t", 0, 0, b"k", b"v", (), 0, "t")


def breaker(clock: VirtualClock, changes: list[BreakerState] | None = None) -> Breaker:
    def changed(topic: str, state: BreakerState) -> None:
        if changes is not None:
            changes.append(state)

    return Breaker("t", SETTINGS, clock, changed)


def state(b: Breaker) -> BreakerState:
    """Read afresh: mypy would narrow ``b.state`` across the awaits that change it."""
    return b.state


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_opens_when_the_window_holds_enough_failures() -> None:
    """Half of the last 4 calls failed: open; fewer, or a window not yet full: closed."""
    b = breaker(VirtualClock())
    for failed in (True, True, False):
        b.record(failed, probe=False)
    assert state(b) is BreakerState.CLOSED  # 3 calls: the window is not full yet
    b.record(False, probe=False)
    assert state(b) is BreakerState.OPEN  # 2 of 4 failed


async def test_an_open_breaker_holds_calls_until_half_open_lets_one_probe() -> None:
    """No call starts while open; after open_for exactly one (the probe) goes through."""
    clock = VirtualClock()
    b = breaker(clock)
    for _ in range(4):
        b.record(True, probe=False)
    first, second = asyncio.create_task(b.admit()), asyncio.create_task(b.admit())
    await settle()
    assert not first.done() and not second.done()
    clock.advance(10.0)
    await settle()
    assert state(b) is BreakerState.HALF_OPEN
    assert [task.done() for task in (first, second)].count(True) == 1
    probe = first if first.done() else second
    assert probe.result() is True
    b.record(False, probe=True)
    await settle()
    assert state(b) is BreakerState.CLOSED
    assert (second if probe is first else first).result() is False


async def test_a_failed_probe_opens_again_for_twice_as_long_up_to_the_cap() -> None:
    """open_for doubles after each failed probe (10, 20, then the cap 25); a success resets it."""
    clock = VirtualClock()
    changes: list[BreakerState] = []
    b = breaker(clock, changes)
    for _ in range(4):
        b.record(True, probe=False)
    for wait in (10.0, 20.0, 25.0, 25.0):
        clock.advance(wait - 0.001)
        await settle()
        assert state(b) is BreakerState.OPEN, wait
        clock.advance(0.001)
        await settle()
        assert state(b) is BreakerState.HALF_OPEN
        assert await b.admit() is True
        b.record(True, probe=True)
    clock.advance(25.0)
    await settle()
    assert await b.admit() is True
    b.record(False, probe=True)
    assert changes[-1] is BreakerState.CLOSED
    for _ in range(4):
        b.record(True, probe=False)
    clock.advance(10.0)
    await settle()
    assert state(b) is BreakerState.HALF_OPEN  # back to open_for after the success


async def test_outcomes_of_calls_started_before_opening_are_ignored() -> None:
    """Calls that were running when the breaker opened finish without reopening it later."""
    clock = VirtualClock()
    b = breaker(clock)
    for _ in range(4):
        b.record(True, probe=False)
    clock.advance(5.0)
    b.record(True, probe=False)
    b.record(True, probe=False)
    clock.advance(5.0)
    await settle()
    assert state(b) is BreakerState.HALF_OPEN  # not pushed back by the late failures


async def test_one_info_line_per_change_of_state(caplog: pytest.LogCaptureFixture) -> None:
    """Opening, half-opening and closing are each logged once at INFO."""
    caplog.set_level(logging.INFO, logger="kafka_retry")
    clock = VirtualClock()
    b = breaker(clock)
    for _ in range(8):
        b.record(True, probe=False)
    clock.advance(10.0)
    await settle()
    assert await b.admit()
    b.record(False, probe=True)
    lines = [r.getMessage() for r in caplog.records if "circuit breaker" in r.getMessage()]
    assert len(lines) == 3
    assert all(r.levelno == logging.INFO for r in caplog.records if "circuit" in r.getMessage())


async def test_the_gate_counts_only_retryable_failures() -> None:
    """A non-retryable failure says nothing about the downstream: it does not open the breaker."""
    b = breaker(VirtualClock())

    async def fatal(message: Message) -> BaseException | None:
        return NonRetryableError("bad input")

    call = gated(fatal, b, lambda error: not isinstance(error, NonRetryableError))
    for _ in range(8):
        await call(MESSAGE)
    assert state(b) is BreakerState.CLOSED


async def test_in_place_retries_number_their_tries_and_stop_on_success() -> None:
    """Tries 1..n carry blocking_attempt; the tier attempt is unchanged."""
    clock = VirtualClock(flowing=True)
    seen: list[tuple[int, int]] = []

    async def flaky(message: Message) -> BaseException | None:
        seen.append((message.attempt, message.blocking_attempt))
        return ConnectionError("blip") if len(seen) < 3 else None

    call = retrying(flaky, 5, 0.001, lambda error: True, clock, None)
    assert await call(MESSAGE) is None
    assert seen == [(1, 1), (1, 2), (1, 3)]


async def test_in_place_retries_skip_non_retryable_errors_and_an_open_breaker() -> None:
    """NonRetryableError escalates at once, and so does any failure once the breaker opened."""
    clock = VirtualClock(flowing=True)
    calls = 0

    async def fatal(message: Message) -> BaseException | None:
        nonlocal calls
        calls += 1
        return NonRetryableError("bad")

    retryable = lambda error: not isinstance(error, NonRetryableError)  # noqa: E731
    assert isinstance(await retrying(fatal, 3, 0.001, retryable, clock, None)(MESSAGE), Exception)
    assert calls == 1
    b = breaker(clock)
    for _ in range(4):
        b.record(True, probe=False)
    calls = 0

    async def down(message: Message) -> BaseException | None:
        nonlocal calls
        calls += 1
        return ConnectionError("down")

    assert await retrying(down, 3, 0.001, retryable, clock, b)(MESSAGE) is not None
    assert calls == 1


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"failure_ratio": 0}, "circuit_breaker.failure_ratio"),
        ({"failure_ratio": 1.5}, "circuit_breaker.failure_ratio"),
        ({"window": 0}, "circuit_breaker.window"),
        ({"window": 2.5}, "circuit_breaker.window"),
        ({"open_for": -1}, "circuit_breaker.open_for"),
        ({"open_for": 30, "max_open_for": 10}, "circuit_breaker.max_open_for"),
    ],
)
def test_breaker_settings_name_the_bad_field(fields: dict[str, float], field: str) -> None:
    """A bad CircuitBreaker value is a ConfigError naming it."""
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        CircuitBreaker(**fields)  # type: ignore[arg-type]


def test_in_place_retries_must_fit_in_the_poll_interval() -> None:
    """Backoff that could outlast max_poll_interval_ms is refused, naming blocking_retries."""
    base = {"bootstrap_servers": "k:9092", "group": "g", "topics": ["t"]}
    Config(**base, blocking_retries=3, blocking_backoff=0.1)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="blocking_retries"):
        Config(**base, blocking_retries=20, blocking_backoff=1.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="blocking_retries"):
        Config(**base, blocking_retries=-1)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="circuit_breaker"):
        Config(**base, circuit_breaker=0.5)  # type: ignore[arg-type]


async def test_a_cancelled_probe_lets_the_next_caller_probe() -> None:
    """A probe cancelled mid-call (a revoke, a stop) does not leave the breaker stuck."""
    clock = VirtualClock()
    b = breaker(clock)
    for _ in range(4):
        b.record(True, probe=False)
    clock.advance(10.0)
    await settle()
    hang = asyncio.Event()

    async def slow(message: Message) -> BaseException | None:
        await hang.wait()
        return None

    call = gated(slow, b, lambda error: True)
    probe = asyncio.create_task(call(MESSAGE))
    await settle()
    waiting = asyncio.create_task(b.admit())
    await settle()
    assert not waiting.done()
    probe.cancel()
    await settle()
    assert waiting.done() and waiting.result() is True
