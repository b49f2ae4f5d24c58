"""Metrics, health and logs of a consumer against a real broker (and PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from kafka_retry import (
    Consumer,
    ConsumerState,
    DatabaseConfig,
    Message,
    NonRetryableError,
    SecurityError,
    ServiceUnavailableError,
)
from kafka_retry.logs import JsonFormatter
from kafka_retry.metrics import observe_dead_lettered_count

from .support import config_for, create_topics, eventually, fresh, produce

pytestmark = pytest.mark.integration

HANDLED = "kafka_retry_messages_handled_total"
DURATION_COUNT = "kafka_retry_handler_duration_seconds_count"
REBALANCES = "kafka_retry_rebalances_total"
LAG = "kafka_retry_consumer_lag"
IN_FLIGHT = "kafka_retry_handlers_in_flight"
SECRET = "hunter2-do-not-log-me"


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """The sample's value, 0 when the series does not exist."""
    return registry.get_sample_value(name, labels) or 0.0


async def test_success_retry_and_dead_letter_are_counted(kafka_service: Any) -> None:
    """Each outcome is counted per topic and tier, and every handler call is timed."""
    topic = fresh()
    bootstrap = kafka_service.bootstrap_servers
    await create_topics(bootstrap, topic)
    await produce(bootstrap, topic, [(b"ok", b"", []), (b"flaky", b"", []), (b"bad", b"", [])])
    config = config_for(kafka_service, topics=[topic], retry_intervals=[0.5])
    calls: list[tuple[bytes | None, int]] = []

    async def handler(message: Message) -> None:
        calls.append((message.key, message.attempt))
        if message.key == b"bad" or (message.key == b"flaky" and message.attempt == 1):
            raise ValueError("upstream said no")

    registry = CollectorRegistry()
    async with Consumer(config, {topic: handler}, registry=registry):
        await eventually(lambda: len(calls) == 5, within=60)

        def counted(tier: str, outcome: str) -> float:
            return sample(registry, HANDLED, topic=topic, tier=tier, outcome=outcome)

        await eventually(lambda: counted("retry1", "dead_letter") == 1)
        assert counted("main", "success") == 1
        assert counted("main", "retry") == 2
        assert counted("retry1", "success") == 1
        assert counted("main", "dead_letter") == 0
        assert sample(registry, DURATION_COUNT, topic=topic, tier="main") == 3
        assert sample(registry, DURATION_COUNT, topic=topic, tier="retry1") == 2
        assert sample(registry, REBALANCES, tier="main") >= 1
        assert sample(registry, REBALANCES, tier="retry1") >= 1


async def test_a_second_member_counts_as_a_rebalance(kafka_service: Any) -> None:
    """A consumer joining the group makes the first one count a new assignment."""
    topic = fresh()
    await create_topics(kafka_service.bootstrap_servers, topic, partitions=2)
    config = config_for(kafka_service, topics=[topic])

    async def handler(message: Message) -> None:
        pass

    first, second = CollectorRegistry(), CollectorRegistry()
    async with Consumer(config, {topic: handler}, registry=first):
        assert sample(first, REBALANCES, tier="main") == 1
        async with Consumer(config, {topic: handler}, registry=second):
            await eventually(lambda: sample(first, REBALANCES, tier="main") >= 2, within=60)
            assert sample(second, REBALANCES, tier="main") >= 1


async def test_lag_rises_with_a_backlog_and_falls_when_drained(kafka_service: Any) -> None:
    """Lag counts the records not done; in-flight counts the handler call running."""
    topic = fresh()
    bootstrap = kafka_service.bootstrap_servers
    await create_topics(bootstrap, topic)
    config = config_for(kafka_service, topics=[topic], metrics_interval=0.1)
    release = asyncio.Event()
    handled: list[int] = []

    async def handler(message: Message) -> None:
        await release.wait()
        handled.append(message.offset)

    registry = CollectorRegistry()

    def lag() -> float | None:
        return registry.get_sample_value(LAG, {"tier": "main", "topic": topic, "partition": "0"})

    async with Consumer(config, {topic: handler}, registry=registry):
        await produce(bootstrap, topic, [(None, b"%d" % i, []) for i in range(30)])
        await eventually(lambda: lag() == 30)
        await eventually(lambda: sample(registry, IN_FLIGHT, tier="main") == 1)
        release.set()
        await eventually(lambda: len(handled) == 30)
        await eventually(lambda: lag() == 0)
        await eventually(lambda: sample(registry, IN_FLIGHT, tier="main") == 0)
    assert lag() is None  # a stopped consumer holds no partitions


async def test_health_shows_tiers_and_flips_when_a_tier_or_the_consumer_stops(
    kafka_service: Any,
) -> None:
    """Health lists each tier's partitions and poll age; a stopped tier makes it not live."""
    topic = fresh()
    await create_topics(kafka_service.bootstrap_servers, topic, partitions=2)
    config = config_for(kafka_service, topics=[topic], retry_intervals=[5])
    retry_topic = config.topic_chain(topic)[1]

    async def handler(message: Message) -> None:
        pass

    consumer = Consumer(config, {topic: handler}, registry=CollectorRegistry())
    async with consumer:
        # Ready comes with the assignment, inside the first poll; wait for it to complete.
        await eventually(lambda: all(t.last_poll is not None for t in consumer._tiers))  # type: ignore[attr-defined]
        report = await consumer.health()
        assert (report.state, report.live, report.ready) == (ConsumerState.RUNNING, True, True)
        assert report.database_reachable is None
        main, retry = report.tiers
        assert (main.name, main.assignment) == ("main", {topic: (0, 1)})
        assert (retry.name, retry.assignment) == ("retry1", {retry_topic: (0, 1)})
        assert main.last_poll_age is not None and main.last_poll_age < 5

        consumer._tiers[1].request_stop()  # as if the retry tier had ended on its own
        await eventually(lambda: consumer._tier_tasks["retry1"].done())
        stopped_tier = await consumer.health()
        assert (stopped_tier.live, stopped_tier.ready) == (False, False)
        assert [t.running for t in stopped_tier.tiers] == [True, False]
    after = await consumer.health()
    assert (after.state, after.live, after.ready) == (ConsumerState.STOPPED, False, False)


async def test_no_password_reaches_the_logs(
    kafka_service: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Failed SASL and PostgreSQL connections log (at DEBUG too) and raise without passwords."""
    topic = fresh()
    await create_topics(kafka_service.bootstrap_servers, topic)

    async def handler(message: Message) -> None:
        pass

    sasl = config_for(
        kafka_service,
        topics=[topic],
        sasl_mechanism="PLAIN",
        sasl_username="svc",
        sasl_password=SECRET,
        connect_attempts=2,
        connect_interval=0.1,
    )
    database = DatabaseConfig(host="127.0.0.1", port=1, user="svc", password=SECRET)
    postgres = config_for(
        kafka_service,
        topics=[topic],
        retry_intervals=[1],
        retry_backend="postgres",
        database=database,
        connect_attempts=2,
        connect_interval=0.1,
    )
    errors: list[str] = []
    with caplog.at_level(logging.DEBUG):
        for config in (sasl, postgres):
            consumer = Consumer(config, {topic: handler}, registry=CollectorRegistry())
            # SASL on a plain listener is refused at once (AuthenticationError).
            with pytest.raises((ServiceUnavailableError, SecurityError)) as caught:
                await consumer.run()
            errors.append(f"{caught.value!r} {caught.value} {caught.value.__cause__!r}")
            assert SECRET not in repr(config)
    assert caplog.records, "the failed connections logged nothing"
    formatter = JsonFormatter()
    for record in caplog.records:
        assert SECRET not in formatter.format(record)
        assert SECRET not in record.getMessage()
    for error in errors:
        assert SECRET not in error


async def test_retry_table_gauges_and_the_go_dead_letter_gauge(
    kafka_service: Any, database_url: str, db_schema: str
) -> None:
    """Pending rows per tier and dead-lettered rows are sampled; the Go gauge is fed too."""
    topic = fresh()
    bootstrap = kafka_service.bootstrap_servers
    await create_topics(bootstrap, topic)
    await produce(bootstrap, topic, [(b"later", b"", []), (b"never", b"", [])])
    config = config_for(
        kafka_service,
        topics=[topic],
        retry_intervals=[300],
        retry_backend="postgres",
        database=DatabaseConfig.from_url(database_url, schema=db_schema),
        metrics_interval=0.1,
    )

    async def handler(message: Message) -> None:
        if message.key == b"never":
            raise NonRetryableError("malformed")
        raise ValueError("not yet")

    registry = CollectorRegistry()
    group = config.group
    async with Consumer(config, {topic: handler}, registry=registry) as consumer:
        pending = {"group": group, "tier": "retry1", "state": "pending"}
        await eventually(lambda: sample(registry, "kafka_retry_pending_rows", **pending) == 1)
        dead = {"group": group}
        await eventually(lambda: sample(registry, "kafka_retry_dead_lettered_rows", **dead) == 1)
        report = await consumer.health()
        assert report.database_reachable is True
        assert report.ready
        observer = asyncio.create_task(observe_dead_lettered_count(config, 0.1, registry=registry))
        try:
            go_gauge = "kafka_consumer_dead_lettered_count"
            await eventually(lambda: sample(registry, go_gauge, group=group) == 1)
        finally:
            observer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await observer
