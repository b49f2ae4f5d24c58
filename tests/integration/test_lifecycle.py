"""Lifecycle edges against a real broker: stopping early, dying under ``async with``, setup."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from kafka_retry import Consumer, ConsumerState, Message, SetupError, _kafka

from .support import config_for, create_topics, eventually, fresh, produce

pytestmark = pytest.mark.integration


class Fatal(BaseException):
    """Not an Exception: it ends the consumer instead of being retried."""


class Blocking:
    """A handler that blocks on its first call until released, then does ``then``."""

    def __init__(self, then: BaseException | None = None) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = False
        self.then = then

    async def __call__(self, message: Message) -> None:
        if self.started.is_set():
            return
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.then is not None:
            raise self.then


async def test_stop_before_the_first_assignment_returns_promptly(
    kafka_service: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A member that stops while its join waits on another's slow revoke does not wait for it."""
    topic = fresh()
    await create_topics(kafka_service.bootstrap_servers, topic, partitions=2)
    await produce(kafka_service.bootstrap_servers, topic, [(b"k", b"v", [])], partition=0)
    config = config_for(
        kafka_service, topics=[topic], drain_timeout=60.0, rebalance_timeout_ms=90_000
    )
    slow = Blocking()
    caplog.set_level(logging.INFO, logger="kafka_retry")
    async with Consumer(config, {topic: slow}) as first:
        await slow.started.wait()
        second = Consumer(config, {topic: Blocking()})
        joining = asyncio.create_task(second.run())
        # The group rebalances: the first member drains its revoked partitions,
        # held by the blocked handler, so the second's join cannot complete.
        await eventually(lambda: "revoked" in caplog.text, within=60)
        await second.stop()
        await joining
        assert second.state is ConsumerState.STOPPED
        assert not slow.cancelled  # the first is still draining: nothing waited for it
        slow.release.set()
    assert first.state is ConsumerState.STOPPED
    # The second's client closes once its join returns: not left to a closed loop.
    await _kafka.finish_late_closes()


async def test_a_consumer_that_dies_ends_the_async_with_block(kafka_service: Any) -> None:
    """A handler ending the consumer cancels the block, and ``async with`` raises its error."""
    topic = fresh()
    await create_topics(kafka_service.bootstrap_servers, topic)
    config = config_for(kafka_service, topics=[topic])
    handler = Blocking(then=Fatal("stop everything"))
    body_cancelled = False
    with pytest.raises(Fatal, match="stop everything"):
        async with Consumer(config, {topic: handler}):
            await produce(kafka_service.bootstrap_servers, topic, [(b"k", b"v", [])])
            await handler.started.wait()
            handler.release.set()
            try:
                await asyncio.Event().wait()  # the block's own work, never done by itself
            except asyncio.CancelledError:
                body_cancelled = True
                raise
    assert body_cancelled
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # not left cancelled for the caller


async def test_an_error_during_the_final_drain_ends_run_with_it(kafka_service: Any) -> None:
    """A handler that ends the consumer while the stop drains it: run() raises, not returns."""
    topic = fresh()
    await create_topics(kafka_service.bootstrap_servers, topic)
    config = config_for(kafka_service, topics=[topic], drain_timeout=30.0)
    handler = Blocking(then=Fatal("while draining"))
    consumer = Consumer(config, {topic: handler})
    running = asyncio.create_task(consumer.run())
    await consumer.wait_ready()
    await produce(kafka_service.bootstrap_servers, topic, [(b"k", b"v", [])])
    await handler.started.wait()
    consumer.request_stop()
    await eventually(lambda: consumer.state is ConsumerState.STOPPING)
    handler.release.set()
    with pytest.raises(Fatal, match="while draining"):
        await running


async def test_a_handler_interrupt_during_the_final_drain_is_raised(kafka_service: Any) -> None:
    """KeyboardInterrupt from a handler while stopping ends run() with it."""
    topic = fresh()
    await create_topics(kafka_service.bootstrap_servers, topic)
    config = config_for(kafka_service, topics=[topic], drain_timeout=30.0)
    handler = Blocking(then=KeyboardInterrupt())
    consumer = Consumer(config, {topic: handler})

    async def stop_while_handled() -> None:
        await handler.started.wait()
        consumer.request_stop()
        await eventually(lambda: consumer.state is ConsumerState.STOPPING)
        handler.release.set()

    stopper = asyncio.create_task(stop_while_handled())
    await produce(kafka_service.bootstrap_servers, topic, [(b"k", b"v", [])])
    with pytest.raises(KeyboardInterrupt):
        await consumer.run()
    await stopper


@pytest.mark.parametrize("backend", ["kafka", "postgres"])
async def test_without_create_topics_a_missing_main_topic_is_named_at_start(
    kafka_service: Any, database_url: str, backend: str
) -> None:
    """``create_topics=False``: a missing main topic is a SetupError, not a hang."""
    from kafka_retry import DatabaseConfig

    topic = fresh()
    database = DatabaseConfig.from_url(database_url) if backend == "postgres" else None
    config = config_for(
        kafka_service,
        topics=[topic],
        retry_intervals=[1],
        create_topics=False,
        retry_backend=backend,
        database=database,
    )
    with pytest.raises(SetupError, match=f"{topic} do not exist"):
        async with Consumer(config, {topic: Blocking()}):
            pass


async def test_without_create_topics_missing_retry_topics_are_named_at_start(
    kafka_service: Any,
) -> None:
    """``create_topics=False``: missing retry and dead-letter topics are named at start."""
    topic = fresh()
    await create_topics(kafka_service.bootstrap_servers, topic)
    config = config_for(kafka_service, topics=[topic], retry_intervals=[1], create_topics=False)
    retry, dead_letter = config.topic_chain(topic)[1:]
    with pytest.raises(SetupError, match=f"{retry}, {dead_letter} do not exist"):
        async with Consumer(config, {topic: Blocking()}):
            pass
    await create_topics(kafka_service.bootstrap_servers, retry, dead_letter)
    async with Consumer(config, {topic: Blocking()}) as consumer:
        assert consumer.state is ConsumerState.RUNNING
