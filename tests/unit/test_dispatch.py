"""Dispatcher: what a failed handler call is recorded as."""

from __future__ import annotations

import asyncio

import pytest

from kafka_retry import Config, Message
from kafka_retry._clock import SystemClock
from kafka_retry.retry.base import Failure
from kafka_retry.runtime.dispatch import Dispatcher, Handler


class Recorder:
    """A retry backend and dead-letter sink that keeps every failure handed to it."""

    def __init__(self) -> None:
        self.failures: list[Failure] = []

    async def schedule(self, failure: Failure) -> None:
        self.failures.append(failure)

    async def dead_letter(self, failure: Failure) -> None:
        self.failures.append(failure)


def message() -> Message:
    return Message("t", 0, 7, b"k", b"v", (), 0, "t", 1, None)


async def handled(handler_timeout: float | None, handler: Handler) -> Failure:
    config = Config(
        bootstrap_servers="localhost:9092",
        group="g",
        topics=["t"],
        retry_intervals=[1],
        handler_timeout=handler_timeout,
    )
    recorder = Recorder()
    dispatcher = Dispatcher(
        config=config,
        handlers={"t": handler},
        main_of={"t": "t"},
        attempt=1,
        retry=recorder,
        dead_letters=recorder,
        clock=SystemClock(),
    )
    hand_off = await dispatcher.run(message())
    assert hand_off is not None
    await hand_off
    [failure] = recorder.failures
    return failure


@pytest.mark.parametrize("handler_timeout", [None, 30.0])
async def test_a_handlers_own_timeout_error_is_reported_as_itself(
    handler_timeout: float | None,
) -> None:
    """A TimeoutError the handler raises keeps its text, with or without handler_timeout."""

    async def upstream_timeout(message: Message) -> None:
        raise TimeoutError("upstream took too long")

    failure = await handled(handler_timeout, upstream_timeout)
    assert (failure.error_type, failure.error_message) == (
        "TimeoutError",
        "upstream took too long",
    )


async def test_only_handler_timeout_says_handler_timed_out() -> None:
    """A call cut short by handler_timeout is recorded as 'handler timed out after <n>s'."""

    async def hangs(message: Message) -> None:
        await asyncio.Event().wait()

    failure = await handled(0.01, hangs)
    assert (failure.error_type, failure.error_message) == (
        "TimeoutError",
        "handler timed out after 0.01s",
    )
