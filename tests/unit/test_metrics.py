"""Metrics, gauge sampling and health, without any service."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import pytest
from aiokafka import TopicPartition
from prometheus_client import REGISTRY, CollectorRegistry

from kafka_retry import Config, ConfigError, Consumer, ConsumerState
from kafka_retry._observe import NullObserver
from kafka_retry.metrics import (
    Metrics,
    PrometheusObserver,
    asgi_app,
    observe_dead_lettered_count,
    serve,
)
from kafka_retry.runtime.monitor import GaugeSampler, health
from kafka_retry.runtime.tier import KafkaTier


def config(**fields: Any) -> Config:
    return Config(bootstrap_servers="k:9092", group="g", topics=["orders"], **fields)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


class FakeTier(KafkaTier):
    """A Kafka tier whose lag, in-flight count, assignment and last poll are set by the test."""

    def __init__(self, name: str) -> None:  # no consumer, no dispatcher: nothing runs
        self.name = name
        self.ready = asyncio.Event()
        self.last_poll: float | None = None
        self.lags: dict[TopicPartition, int] = {}
        self.running_now = 0

    @property
    def in_flight(self) -> int:
        return self.running_now

    @property
    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset(self.lags)

    def lag(self) -> dict[TopicPartition, int]:
        return dict(self.lags)


async def forever() -> None:
    await asyncio.Event().wait()


class FixedClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Any) -> Any:
        raise NotImplementedError

    async def sleep(self, seconds: float) -> None:
        raise NotImplementedError


def test_observer_counts_outcomes_per_topic_tier_and_outcome() -> None:
    """Each outcome increments its own (topic, tier, outcome) series, and nothing else."""
    registry = CollectorRegistry()
    observer = PrometheusObserver(Metrics.for_registry(registry))
    observer.handled("main", "orders", "success")
    observer.handled("main", "orders", "success")
    observer.handled("main", "orders", "retry")
    observer.handled("retry1", "orders", "dead_letter")
    name = "kafka_retry_messages_handled_total"
    assert value(registry, name, topic="orders", tier="main", outcome="success") == 2
    assert value(registry, name, topic="orders", tier="main", outcome="retry") == 1
    assert value(registry, name, topic="orders", tier="retry1", outcome="dead_letter") == 1
    assert value(registry, name, topic="orders", tier="main", outcome="dead_letter") is None


def test_observer_records_durations_failures_and_rebalances() -> None:
    """Durations go to the histogram; forward, commit failures and rebalances are counted."""
    registry = CollectorRegistry()
    observer = PrometheusObserver(Metrics.for_registry(registry))
    observer.handler_duration("main", "orders", 0.003)
    observer.handler_duration("main", "orders", 0.5)
    observer.forward_failed("retry1.g.orders", "KafkaTimeoutError")
    observer.commit_failed("main")
    observer.rebalanced("main")
    observer.rebalanced("main")
    duration = "kafka_retry_handler_duration_seconds"
    assert value(registry, f"{duration}_count", topic="orders", tier="main") == 2
    assert value(registry, f"{duration}_sum", topic="orders", tier="main") == pytest.approx(0.503)
    assert value(registry, f"{duration}_bucket", topic="orders", tier="main", le="0.005") == 1
    failures = "kafka_retry_forward_failures_total"
    assert value(registry, failures, topic="retry1.g.orders", error_type="KafkaTimeoutError") == 1
    assert value(registry, "kafka_retry_commit_failures_total", tier="main") == 1
    assert value(registry, "kafka_retry_rebalances_total", tier="main") == 2


def test_metrics_are_created_once_per_registry() -> None:
    """The same registry gives the same metrics; another registry its own."""
    registry = CollectorRegistry()
    assert Metrics.for_registry(registry) is Metrics.for_registry(registry)
    assert Metrics.for_registry(registry) is not Metrics.for_registry(CollectorRegistry())
    assert Metrics.for_registry() is Metrics.for_registry(REGISTRY)


def test_every_name_is_namespaced() -> None:
    """Every metric is named kafka_retry_*, except the Go module's dead-letter gauge."""
    registry = CollectorRegistry()
    Metrics.for_registry(registry)
    names = {metric.name for metric in registry.collect()}
    assert "kafka_consumer_dead_lettered_count" in names
    assert all(n.startswith("kafka_retry_") for n in names - {"kafka_consumer_dead_lettered_count"})


def test_consumer_reports_to_its_registry_or_nowhere() -> None:
    """Metrics on: a Prometheus observer on the given registry; off: the null observer."""
    registry = CollectorRegistry()
    on = Consumer(config(), registry=registry)
    assert isinstance(on._observer, PrometheusObserver)
    assert on._metrics is Metrics.for_registry(registry)
    off = Consumer(config(metrics=False), registry=CollectorRegistry())
    assert isinstance(off._observer, NullObserver)
    assert off._metrics is None


def test_metrics_settings_are_validated_and_read_from_env() -> None:
    """metrics must be a bool, metrics_interval > 0; both come from KAFKA_METRICS*."""
    with pytest.raises(ConfigError, match="metrics_interval"):
        config(metrics_interval=0)
    with pytest.raises(ConfigError, match="metrics"):
        config(metrics="yes")
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "k:9092",
        "KAFKA_GROUP": "g",
        "KAFKA_TOPICS": "orders",
        "KAFKA_METRICS": "false",
        "KAFKA_METRICS_INTERVAL": "2.5",
    }
    from_env = Config.from_env(env)
    assert (from_env.metrics, from_env.metrics_interval) == (False, 2.5)


async def test_sampler_sets_lag_and_removes_partitions_no_longer_held() -> None:
    """Lag is set per (tier, topic, partition); a partition given up loses its series."""
    registry = CollectorRegistry()
    tier = FakeTier("main")
    tier.lags = {TopicPartition("orders", 0): 7, TopicPartition("orders", 1): 0}
    sampler = GaugeSampler(Metrics.for_registry(registry), config(), [tier])
    await sampler.refresh()
    lag = "kafka_retry_consumer_lag"
    assert value(registry, lag, tier="main", topic="orders", partition="0") == 7
    assert value(registry, lag, tier="main", topic="orders", partition="1") == 0
    tier.lags = {TopicPartition("orders", 0): 3}
    await sampler.refresh()
    assert value(registry, lag, tier="main", topic="orders", partition="0") == 3
    assert value(registry, lag, tier="main", topic="orders", partition="1") is None


async def test_in_flight_adds_up_across_consumers_and_is_withdrawn() -> None:
    """Two consumers sharing a registry add their in-flight counts; a stopped one takes its back."""
    registry = CollectorRegistry()
    metrics = Metrics.for_registry(registry)
    first, second = FakeTier("main"), FakeTier("main")
    first.running_now, second.running_now = 2, 3
    first.lags = {TopicPartition("orders", 0): 1}
    one = asyncio.create_task(GaugeSampler(metrics, config(metrics_interval=0.01), [first]).run())
    other = GaugeSampler(metrics, config(), [second])
    await other.refresh()
    await asyncio.sleep(0.05)
    assert value(registry, "kafka_retry_handlers_in_flight", tier="main") == 5
    one.cancel()
    with pytest.raises(asyncio.CancelledError):
        await one
    assert value(registry, "kafka_retry_handlers_in_flight", tier="main") == 3
    lag = "kafka_retry_consumer_lag"
    assert value(registry, lag, tier="main", topic="orders", partition="0") is None


async def test_sampler_failure_is_logged_once_and_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A tier that cannot tell its lag costs one warning, not the consumer."""

    class Broken(FakeTier):
        def lag(self) -> dict[TopicPartition, int]:
            raise AttributeError("no highwater here")

    sampler = GaugeSampler(Metrics.for_registry(CollectorRegistry()), config(), [Broken("main")])
    with caplog.at_level(logging.WARNING, logger="kafka_retry"):
        await sampler.refresh()
        await sampler.refresh()
    assert [r.message for r in caplog.records].count(
        "sampling metrics failed: AttributeError: no highwater here"
    ) == 1


async def test_health_reports_tiers_and_flips_on_a_stopped_tier() -> None:
    """Ready while every tier runs and polls; an ended tier or a stale poll makes it not live."""
    main, retry = FakeTier("main"), FakeTier("retry1")
    main.lags = {TopicPartition("orders", 1): 0, TopicPartition("orders", 0): 0}
    for tier in (main, retry):
        tier.ready.set()
        tier.last_poll = 100.0
    tasks = {t.name: asyncio.create_task(forever()) for t in (main, retry)}
    clock = FixedClock(101.5)
    tiers = [main, retry]
    report = await health(ConsumerState.RUNNING, tiers, tasks, None, clock, stale_after=60)
    assert (report.live, report.ready, report.database_reachable) == (True, True, None)
    assert report.tiers[0].assignment == {"orders": (0, 1)}
    assert report.tiers[0].last_poll_age == pytest.approx(1.5)
    assert report.as_dict()["tiers"][0]["assignment"] == {"orders": (0, 1)}
    json.dumps(report.as_dict())

    clock.now = 200.0
    stale = await health(ConsumerState.RUNNING, tiers, tasks, None, clock, stale_after=60)
    assert (stale.live, stale.ready) == (False, False)

    clock.now = 101.5
    tasks["retry1"].cancel()
    await asyncio.sleep(0)
    ended = await health(ConsumerState.RUNNING, tiers, tasks, None, clock, stale_after=60)
    assert (ended.live, ended.ready) == (False, False)
    assert [t.running for t in ended.tiers] == [True, False]
    tasks["main"].cancel()
    await asyncio.gather(*tasks.values(), return_exceptions=True)
    stopped = await health(ConsumerState.STOPPED, tiers, {}, None, clock, stale_after=60)
    assert (stopped.live, stopped.ready) == (False, False)


async def test_a_new_consumer_is_live_but_not_ready() -> None:
    """Before it starts, a consumer is live (nothing failed) and not ready."""
    report = await Consumer(config(), registry=CollectorRegistry()).health()
    assert (report.state, report.live, report.ready, report.tiers) == (
        ConsumerState.NEW,
        True,
        False,
        (),
    )


async def test_serve_a_custom_registry() -> None:
    """serve() exposes a custom registry at /metrics; closing twice is harmless."""
    registry = CollectorRegistry()
    PrometheusObserver(Metrics.for_registry(registry)).rebalanced("main")
    server = await serve(0, addr="127.0.0.1", registry=registry)
    async with server, httpx.AsyncClient() as client:
        response = await client.get(server.url)
    await server.aclose()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'kafka_retry_rebalances_total{tier="main"} 1.0' in response.text
    assert "python_info" not in response.text  # only what this registry holds


async def test_serve_the_global_registry_with_prometheus_async() -> None:
    """serve() without a registry runs prometheus-async's server on the global registry."""
    Metrics.for_registry()
    async with await serve(0, addr="127.0.0.1") as server, httpx.AsyncClient() as client:
        response = await client.get(server.url)
    assert server.url.endswith(f":{server.port}/metrics")
    assert response.status_code == 200
    assert "# HELP kafka_retry_messages_handled_total" in response.text


async def test_asgi_app_serves_its_registry() -> None:
    """The ASGI app answers with the registry's exposition."""
    registry = CollectorRegistry()
    PrometheusObserver(Metrics.for_registry(registry)).commit_failed("retry1")
    transport = httpx.ASGITransport(app=asgi_app(registry))
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        response = await client.get("/")
    assert response.status_code == 200
    assert 'kafka_retry_commit_failures_total{tier="retry1"} 1.0' in response.text


async def test_dead_letter_observer_needs_database_settings() -> None:
    """observe_dead_lettered_count refuses a config without a database, before connecting."""
    with pytest.raises(ConfigError, match="database"):
        await observe_dead_lettered_count(config(), 1.0, registry=CollectorRegistry())
