"""TestConsumer: the real runtime in memory, drained on a virtual clock."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from kafka_retry import (
    Config,
    Consumer,
    ConsumerStateError,
    Message,
    NonRetryableError,
    SetupError,
)
from kafka_retry.testing import MemoryBroker, NotSettledError, TestConsumer, VirtualClock

ODD = b"\xff\x00\xfe not utf-8 \x80"
HEADERS = [("trace", b"1"), ("trace", b"2"), ("bin", b"\x00\xff")]


def make_config(**fields: Any) -> Config:
    fields.setdefault("topics", ["product"])
    return Config(bootstrap_servers="localhost:9092", group="shop", **fields)


async def failing(message: Message) -> None:
    raise RuntimeError(f"boom {message.attempt}")


async def succeeding(message: Message) -> None:
    pass


async def test_success_is_recorded() -> None:
    """A published record reaches the handler once, byte-exact; history says it succeeded."""
    async with TestConsumer(make_config(), {"product": succeeding}) as t:
        await t.publish("product", ODD, key=b"k", headers=HEADERS)
        await t.drain()
    [message] = t.calls
    assert (message.topic, message.key, message.value, list(message.headers)) == (
        "product",
        b"k",
        ODD,
        HEADERS,
    )
    assert message.attempt == 1
    assert [call.ok for call in t.history] == [True]
    assert t.dead_letters("product") == []


async def test_retry_is_not_handled_before_its_interval() -> None:
    """With a 60 s interval, the retry runs at 60 s of clock time, not a millisecond before."""
    attempts: list[int] = []

    async def flaky(message: Message) -> None:
        attempts.append(message.attempt)
        if message.attempt == 1:
            raise ValueError("upstream down")

    async with TestConsumer(make_config(retry_intervals=[60]), {"product": flaky}) as t:
        await t.publish("product", b"v")
        await t.settle()
        assert attempts == [1]
        await t.advance(59.999)
        assert attempts == [1]
        await t.advance(0.001)
        assert attempts == [1, 2]
    first, retry = t.history
    assert retry.started_at - first.finished_at == pytest.approx(60)
    assert retry.message.provenance is not None
    assert retry.message.provenance.error_message == "upstream down"


async def test_drain_goes_through_every_tier_to_the_dead_letter() -> None:
    """Intervals [60, 120]: three attempts at 0, 60 and 180 s, then a dead letter."""
    config = make_config(retry_intervals=[60, 120])
    async with TestConsumer(config, {"product": failing}) as t:
        start = t.clock.time()
        await t.publish("product", ODD, key=b"k", headers=HEADERS)
        await t.drain()
    assert [m.attempt for m in t.calls] == [1, 2, 3]
    assert [m.topic for m in t.calls] == config.topic_chain("product")[:3]
    assert [c.started_at - start for c in t.history] == [0, 60, 180]
    [dead] = t.dead_letters("product")
    assert (dead.key, dead.value, list(dead.headers)) == (b"k", ODD, HEADERS)
    assert (dead.attempts, dead.error_type, dead.error_message) == (3, "RuntimeError", "boom 3")
    assert dead.main_topic == "product"
    assert dead.timestamp == t.calls[0].timestamp


async def test_advance_runs_what_falls_due_inside_the_window() -> None:
    """advance(100) covers the 60 s retry only; advance(200) in all covers the 180 s one."""
    async with TestConsumer(make_config(retry_intervals=[60, 120]), {"product": failing}) as t:
        await t.publish("product", b"v")
        await t.advance(100)
        assert [m.attempt for m in t.calls] == [1, 2]
        await t.advance(100)
        assert [m.attempt for m in t.calls] == [1, 2, 3]
        assert len(t.dead_letters("product")) == 1


async def test_non_retryable_goes_to_the_dead_letter_at_once() -> None:
    """NonRetryableError skips the retry tiers."""

    async def refuse(message: Message) -> None:
        raise NonRetryableError("bad payload")

    config = make_config(retry_intervals=[60])
    async with TestConsumer(config, {"product": refuse}) as t:
        await t.publish("product", b"v")
        await t.drain()
        assert t.clock.advanced == 0
    assert [m.attempt for m in t.calls] == [1]
    assert t.records(config.topic_chain("product")[1]) == []
    assert [d.error_message for d in t.dead_letters("product")] == ["bad payload"]


async def test_uses_the_consumers_registered_handlers() -> None:
    """Handlers registered with @consumer.handler run; the user's consumer is not started."""
    consumer = Consumer(make_config(topics=["product", "price"]))
    seen: list[str] = []

    @consumer.handler("product")
    async def on_product(message: Message) -> None:
        seen.append("product")

    @consumer.handler("price")
    async def on_price(message: Message) -> None:
        seen.append("price")

    async def stub(message: Message) -> None:
        seen.append("stub")

    async with TestConsumer(consumer, {"price": stub}) as t:
        await t.publish("product", b"1")
        await t.publish("price", b"2")
        await t.drain()
    assert sorted(seen) == ["product", "stub"]
    assert consumer.state.value == "new"


async def test_records_published_before_start_are_consumed() -> None:
    """Main topics exist from construction, so a test can publish first."""
    t = TestConsumer(make_config(), {"product": succeeding}, partitions=3)
    await t.publish("product", b"early", key=b"a")
    async with t:
        await t.drain()
    assert [m.value for m in t.calls] == [b"early"]
    assert t.broker.partitions("product") == 3


async def test_offsets_are_committed_on_exit() -> None:
    """After the block, the group's committed offset is past every handled record."""
    async with TestConsumer(make_config(), {"product": succeeding}) as t:
        for _ in range(3):
            await t.publish("product", b"v")
        await t.drain()
    assert t.broker.committed("shop", "product") == 3


async def test_without_topic_creation_the_whole_chain_is_made() -> None:
    """create_topics=False: the test mode creates the retry and dead-letter topics itself."""
    config = make_config(retry_intervals=[1], create_topics=False)
    async with TestConsumer(config, {"product": failing}) as t:
        await t.publish("product", b"v")
        await t.drain()
    assert len(t.dead_letters("product")) == 1


async def test_two_instances_share_the_partitions_of_a_group() -> None:
    """Two TestConsumers on one broker split the partitions; each record is handled once."""
    clock = VirtualClock()
    broker = MemoryBroker(clock=clock)
    config = make_config()
    one = TestConsumer(config, {"product": succeeding}, broker=broker, partitions=2)
    two = TestConsumer(config, {"product": succeeding}, broker=broker)
    async with one, two:
        for key in (b"a", b"b", b"c", b"d", b"e", b"f"):
            await one.publish("product", b"v", key=key)
        await one.drain()
        await two.drain()
    assert len(one.calls) + len(two.calls) == 6
    assert one.calls and two.calls
    assert {m.partition for m in one.calls}.isdisjoint({m.partition for m in two.calls})


async def test_a_hanging_handler_makes_drain_fail_clearly() -> None:
    """A handler that never returns: NotSettledError naming it, within the bound."""

    async def hang(message: Message) -> None:
        await asyncio.Event().wait()

    t = TestConsumer(make_config(), {"product": hang})
    started = time.perf_counter()
    with pytest.raises(NotSettledError, match=r"handler running: product\[0\]@0 attempt 1"):
        async with t:
            await t.publish("product", b"v")
            await t.drain(within=0.1)
    # The failed block does not wait out the 30 s drain timeout for the stuck handler.
    assert time.perf_counter() - started < 3
    assert t.consumer.state.value == "stopped"


async def test_endless_timers_hit_the_jump_bound() -> None:
    """Something re-arming a timer forever: NotSettledError after max_jumps."""
    async with TestConsumer(make_config(), {"product": succeeding}) as t:

        def again() -> None:
            t.clock.call_later(1, again)

        t.clock.call_later(1, again)
        with pytest.raises(NotSettledError, match="after 5 clock jumps"):
            await t.drain(max_jumps=5)


class Fatal(BaseException):
    """Not an Exception: the runtime lets it end the consumer."""


async def test_a_crash_of_the_consumer_is_raised_by_drain() -> None:
    """A BaseException from a handler ends the consumer; drain raises it."""

    async def fatal(message: Message) -> None:
        raise Fatal()

    t = TestConsumer(make_config(), {"product": fatal})
    with pytest.raises(Fatal):
        async with t:
            await t.publish("product", b"v")
            await t.drain()


async def test_setup_errors_surface_on_entry() -> None:
    """A missing or non-async handler fails at start, as it would against Kafka."""

    def not_async(message: Message) -> None:
        pass

    with pytest.raises(SetupError, match="no handler"):
        async with TestConsumer(make_config(), {}):
            pass
    with pytest.raises(SetupError, match="must be an async function"):
        async with TestConsumer(make_config(), {"product": not_async}):  # type: ignore[dict-item]
            pass


async def test_lifecycle_misuse() -> None:
    """Runs once; drain before start is refused; a foreign broker clock is refused."""
    t = TestConsumer(make_config(), {"product": succeeding})
    with pytest.raises(ConsumerStateError, match="start"):
        await t.drain()
    async with t:
        pass
    await t.aclose()
    with pytest.raises(ConsumerStateError, match="runs once"):
        async with t:
            pass
    with pytest.raises(ValueError, match="same clock"):
        TestConsumer(make_config(), broker=MemoryBroker(), clock=VirtualClock())


async def test_start_and_stop_are_fast() -> None:
    """Entering and leaving takes milliseconds: no fetch waits out its 200 ms."""
    started = time.perf_counter()
    async with TestConsumer(make_config(retry_intervals=[1, 2]), {"product": succeeding}):
        pass
    assert time.perf_counter() - started < 0.15


def test_pytest_does_not_collect_it() -> None:
    """The Test prefix does not make it a test class."""
    assert TestConsumer.__test__ is False
