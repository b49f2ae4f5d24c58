"""Calm logs: the first failures in full, then summaries timed by the consumer's clock."""

from __future__ import annotations

import asyncio
import logging

import pytest

from kafka_retry import Message
from kafka_retry.runtime._calm import FailureLog
from kafka_retry.testing import VirtualClock


class Down(Exception):
    """The downstream is down."""


def message(offset: int) -> Message:
    return Message("orders", 0, offset, None, b"v", (), 0, "orders")


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


async def test_summaries_follow_the_injected_clock(caplog: pytest.LogCaptureFixture) -> None:
    """Two in full, then one summary once the virtual clock passes the interval."""
    clock = VirtualClock()
    failures = FailureLog(2, 10.0, clock)
    caplog.set_level(logging.DEBUG, logger="kafka_retry")
    for offset in range(5):
        failures.failed(message(offset), "main", Down("down"), "app.Down", "down", False)
    assert len(warnings(caplog)) == 2
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(debug) == 3  # every failure past the first ones is still at DEBUG
    clock.advance(9.9)
    await asyncio.sleep(0)  # due callbacks run at the next turn of the loop
    assert len(warnings(caplog)) == 2
    clock.advance(0.1)
    await asyncio.sleep(0)
    summary = warnings(caplog)[-1]
    assert summary.startswith("3 more handler failures for orders (app.Down) in the last 10s")
    assert summary.endswith("latest: down")


async def test_debug_lines_cost_nothing_when_debug_is_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Past the first failures, nothing is logged (or formatted) without DEBUG; all counted."""
    clock = VirtualClock()
    failures = FailureLog(1, 10.0, clock)
    caplog.set_level(logging.INFO, logger="kafka_retry")
    for offset in range(4):
        failures.failed(message(offset), "retry1", Down("down"), "app.Down", "down", True)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert caplog.records[0].getMessage().endswith("-> dead letter")
    failures.flush()
    assert warnings(caplog)[-1].startswith("3 more handler failures for orders")


async def test_the_first_failures_are_logged_with_their_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """In full means with the traceback: where the handler failed, not only what."""

    def handler() -> None:
        raise Down("the service is down")

    try:
        handler()
    except Down as caught:
        error = caught
    failures = FailureLog(1, 10.0, VirtualClock())
    caplog.set_level(logging.INFO, logger="kafka_retry")
    failures.failed(message(0), "main", error, "app.Down", "the service is down", False)
    [record] = caplog.records
    assert record.exc_info is not None and record.exc_info[1] is error
    assert "in handler" in caplog.text  # the frame that raised
