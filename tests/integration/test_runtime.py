"""The consumer runtime against a real broker: success, retries, dead letters, restarts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kafka_retry import (
    Consumer,
    ConsumerState,
    ConsumerStateError,
    Message,
    NonRetryableError,
    ServiceUnavailableError,
    SetupError,
)
from kafka_retry.message import H_ERROR_MESSAGE

from .support import config_for, create_topics, eventually, fresh, produce, read_all

pytestmark = pytest.mark.integration

ODD_VALUE = b"\xff\x00\xfe not utf-8 \x80"
DUP_HEADERS = [("trace", b"1"), ("trace", b"2"), ("bin", b"\x00\xff")]


class Recorder:
    """A handler that records every call and fails as told."""

    def __init__(self, fail: Any = None) -> None:
        self.calls: list[Message] = []
        self.fail = fail

    async def __call__(self, message: Message) -> None:
        self.calls.append(message)
        if self.fail is not None:
            error = self.fail(message)
            if error is not None:
                raise error


async def test_success_is_handled_once_and_committed(kafka_service: Any) -> None:
    """A successful message is handled once, and a restarted consumer does not see it again."""
    topic = fresh()
    await create_topics(kafka_service.bootstrap_servers, topic)
    await produce(kafka_service.bootstrap_servers, topic, [(b"k", b"v", [])])
    config = config_for(kafka_service, topics=[topic], retry_intervals=[1])
    first = Recorder()
    async with Consumer(config, {topic: first}):
        await eventually(lambda: len(first.calls) == 1)
    assert first.calls[0].attempt == 1
    assert first.calls[0].provenance is None

    await produce(kafka_service.bootstrap_servers, topic, [(b"k2", b"after", [])])
    second = Recorder()
    async with Consumer(config, {topic: second}):
        await eventually(lambda: len(second.calls) == 1)
    assert [m.value for m in second.calls] == [b"after"]


async def test_fails_once_then_succeeds_on_retry1(kafka_service: Any) -> None:
    """A first failure goes to retry1 and is handled as attempt 2, never before its delay."""
    topic = fresh()
    await create_topics(kafka_service.bootstrap_servers, topic)
    await produce(kafka_service.bootstrap_servers, topic, [(b"k", ODD_VALUE, DUP_HEADERS)])
    config = config_for(kafka_service, topics=[topic], retry_intervals=[1])
    handler = Recorder(lambda m: ValueError("upstream down") if m.attempt == 1 else None)
    async with Consumer(config, {topic: handler}):
        await eventually(lambda: len(handler.calls) == 2)
    first, retry = handler.calls
    assert retry.attempt == 2
    assert retry.topic == config.topic_chain(topic)[1]
    assert retry.main_topic == topic
    assert (retry.key, retry.value, list(retry.headers)) == (b"k", ODD_VALUE, DUP_HEADERS)
    assert retry.timestamp == first.timestamp
    provenance = retry.provenance
    assert provenance is not None
    assert provenance.attempts == 1
    assert (provenance.original_topic, provenance.original_offset) == (topic, first.offset)
    assert provenance.error_type == "ValueError"
    assert provenance.error_message == "upstream down"
    assert provenance.due_at == provenance.failed_at + 1000


async def test_always_failing_goes_through_every_tier_to_dead_letter(kafka_service: Any) -> None:
    """Intervals [1, 2]: three tries, then one dead letter, byte-exact."""
    topic = fresh()
    bootstrap = kafka_service.bootstrap_servers
    await create_topics(bootstrap, topic, partitions=2)
    await produce(bootstrap, topic, [(b"key-1", ODD_VALUE, DUP_HEADERS)])
    config = config_for(kafka_service, topics=[topic], retry_intervals=[1, 2])
    handler = Recorder(lambda m: RuntimeError(f"boom {m.attempt}"))
    async with Consumer(config, {topic: handler}):
        await eventually(lambda: len(handler.calls) == 3)
        dead = await read_all(bootstrap, config.topic_chain(topic)[-1], 1)
    assert [m.attempt for m in handler.calls] == [1, 2, 3]
    # Never early: each retry starts no sooner than its predecessor failed plus the interval.
    for retry, interval in zip(handler.calls[1:], (1000, 2000), strict=True):
        assert retry.provenance is not None
        assert retry.provenance.due_at == retry.provenance.failed_at + interval
    assert len(dead) == 1
    record = dead[0]
    assert (record.key, record.value) == (b"key-1", ODD_VALUE)
    assert list(record.headers)[:3] == DUP_HEADERS
    headers = dict(record.headers)
    assert headers[H_ERROR_MESSAGE] == b"boom 3"
    assert headers["kafka-retry-attempts"] == b"3"
    assert record.timestamp == handler.calls[0].timestamp


async def test_retry_not_handled_before_due(kafka_service: Any) -> None:
    """The retry tier waits for the due time carried by the record (wall clock check)."""
    topic = fresh()
    await create_topics(kafka_service.bootstrap_servers, topic)
    await produce(kafka_service.bootstrap_servers, topic, [(None, b"x", [])])
    config = config_for(kafka_service, topics=[topic], retry_intervals=[2])
    started: list[float] = []
    loop = asyncio.get_running_loop()

    async def handler(message: Message) -> None:
        started.append(loop.time())
        if message.attempt == 1:
            raise ValueError("later")

    async with Consumer(config, {topic: handler}):
        await eventually(lambda: len(started) == 2)
    assert started[1] - started[0] >= 2.0 - 0.05  # loop clock vs wall clock rounding


async def test_non_retryable_goes_straight_to_dead_letter(kafka_service: Any) -> None:
    """NonRetryableError (and configured types) skip the retry tiers."""
    topic = fresh()
    bootstrap = kafka_service.bootstrap_servers
    await create_topics(bootstrap, topic)
    await produce(bootstrap, topic, [(b"a", b"1", []), (b"b", b"2", [])])
    config = config_for(
        kafka_service, topics=[topic], retry_intervals=[1], non_retryable=[KeyError]
    )
    handler = Recorder(
        lambda m: NonRetryableError("bad payload") if m.key == b"a" else KeyError("missing")
    )
    async with Consumer(config, {topic: handler}):
        await eventually(lambda: len(handler.calls) == 2)
        dead = await read_all(bootstrap, config.topic_chain(topic)[-1], 2)
    assert [m.attempt for m in handler.calls] == [1, 1]
    assert sorted(r.key for r in dead) == [b"a", b"b"]
    retried = await read_all(bootstrap, config.topic_chain(topic)[1], 1, within=1)
    assert retried == []


async def test_two_topics_have_separate_chains(kafka_service: Any) -> None:
    """Each main topic's failures go through its own chain to its own handler."""
    product, price = fresh("product"), fresh("price")
    bootstrap = kafka_service.bootstrap_servers
    await create_topics(bootstrap, product, price)
    await produce(bootstrap, product, [(b"p", b"product", [])])
    await produce(bootstrap, price, [(b"q", b"price", [])])
    config = config_for(kafka_service, topics=[product, price], retry_intervals=[1])
    on_product = Recorder(lambda m: ValueError() if m.attempt == 1 else None)
    on_price = Recorder(lambda m: ValueError() if m.attempt == 1 else None)
    async with Consumer(config, {product: on_product, price: on_price}):
        await eventually(lambda: len(on_product.calls) == 2 and len(on_price.calls) == 2)
    assert {m.topic for m in on_product.calls} == set(config.topic_chain(product)[:2])
    assert {m.topic for m in on_price.calls} == set(config.topic_chain(price)[:2])
    assert {m.value for m in on_product.calls} == {b"product"}


async def test_custom_topic_names(kafka_service: Any) -> None:
    """A custom generator's names are the topics created and used."""
    topic = fresh()
    bootstrap = kafka_service.bootstrap_servers
    await create_topics(bootstrap, topic)
    await produce(bootstrap, topic, [(b"k", b"v", [])])
    config = config_for(
        kafka_service,
        topics=[topic],
        retry_intervals=[1],
        topic_name_generator=lambda group, main, prefix: f"{main}__{prefix}",
    )
    handler = Recorder(lambda m: ValueError("again"))
    async with Consumer(config, {topic: handler}):
        await eventually(lambda: len(handler.calls) == 2)
        dead = await read_all(bootstrap, f"{topic}__deadLetter", 1)
    assert handler.calls[1].topic == f"{topic}__retry1"
    assert len(dead) == 1


async def test_decorator_registration(kafka_service: Any) -> None:
    """@consumer.handler registers the handler for a topic."""
    topic = fresh()
    await create_topics(kafka_service.bootstrap_servers, topic)
    await produce(kafka_service.bootstrap_servers, topic, [(b"k", b"v", [])])
    consumer = Consumer(config_for(kafka_service, topics=[topic]))
    seen: list[bytes | None] = []

    @consumer.handler(topic)
    async def on_topic(message: Message) -> None:
        seen.append(message.value)

    async with consumer:
        await eventually(lambda: seen == [b"v"])
    assert consumer.state is ConsumerState.STOPPED


async def test_cancelled_between_handler_and_commit_redelivers(kafka_service: Any) -> None:
    """Cancelling run() while a handler is in flight loses nothing: the message comes again."""
    topic = fresh()
    await create_topics(kafka_service.bootstrap_servers, topic)
    await produce(kafka_service.bootstrap_servers, topic, [(b"k", b"v", [])])
    config = config_for(kafka_service, topics=[topic], drain_timeout=0.5)
    entered = asyncio.Event()

    async def stuck(message: Message) -> None:
        entered.set()
        await asyncio.Event().wait()

    consumer = Consumer(config, {topic: stuck})
    task = asyncio.create_task(consumer.run())
    await asyncio.wait_for(entered.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    again = Recorder()
    async with Consumer(config, {topic: again}):
        await eventually(lambda: len(again.calls) == 1)
    assert again.calls[0].value == b"v"


async def test_stop_is_idempotent_and_restart_refused(kafka_service: Any) -> None:
    """stop() twice is fine; a stopped consumer cannot run again."""
    topic = fresh()
    await create_topics(kafka_service.bootstrap_servers, topic)
    consumer = Consumer(config_for(kafka_service, topics=[topic]), {topic: Recorder()})
    async with consumer:
        assert consumer.state is ConsumerState.RUNNING
    await consumer.stop()
    await consumer.stop()
    with pytest.raises(ConsumerStateError, match="cannot start a stopped consumer"):
        await consumer.run()


async def test_missing_handler_is_a_startup_error(kafka_service: Any) -> None:
    """A configured topic without a handler, or a handler for an unknown topic, fails at start."""
    topic = fresh()
    config = config_for(kafka_service, topics=[topic])
    with pytest.raises(SetupError, match=f"no handler for topic.*{topic}"):
        await Consumer(config).run()
    with pytest.raises(SetupError, match=r"unknown topic.*other"):
        await Consumer(config, {topic: Recorder(), "other": Recorder()}).run()


async def test_missing_main_topic_is_a_startup_error(kafka_service: Any) -> None:
    """A main topic that does not exist is named at start."""
    topic = fresh()
    config = config_for(kafka_service, topics=[topic])
    with pytest.raises(SetupError, match=f"{topic}.*do not exist"):
        async with Consumer(config, {topic: Recorder()}):
            pass


async def test_unreachable_kafka_names_the_address() -> None:
    """Nothing listening: a ServiceUnavailableError naming the address after the bound."""
    from kafka_retry import Config

    config = Config(
        bootstrap_servers="127.0.0.1:1",
        group="g",
        topics=["t"],
        connect_attempts=2,
        connect_interval=0.05,
    )
    with pytest.raises(ServiceUnavailableError, match=r"127\.0\.0\.1:1.*2 attempts") as caught:
        await Consumer(config, {"t": Recorder()}).run()
    assert caught.value.address == "127.0.0.1:1"


async def test_broker_refusing_idempotent_producers_is_named_at_once(
    kafka_service: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A broker without producer ids: SetupError at the first attempt, naming the setting."""
    if kafka_service.supports_idempotence:
        pytest.skip("the broker hands out producer ids; KAFKA_RETRY_TEST_BROKER=tansu does not")
    topic = fresh()
    await create_topics(kafka_service.bootstrap_servers, topic)
    config = config_for(
        kafka_service, topics=[topic], idempotence=True, connect_attempts=3, connect_interval=0.05
    )
    with pytest.raises(SetupError, match=r"refused an idempotent producer.*KAFKA_IDEMPOTENCE"):
        await Consumer(config, {topic: Recorder()}).run()
    assert not [record for record in caplog.records if "not reachable" in record.getMessage()]
