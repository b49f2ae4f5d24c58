"""pytest fixtures for testing kafka-retry handlers; pytest loads this module by itself.

In memory (no services): ``virtual_clock``, ``memory_broker`` (on that clock) and
``test_consumer``, a factory of :class:`~kafka_retry.testing.TestConsumer` on
both. Against real services, started by :mod:`kafka_retry.devstack` unless
``$KAFKA_BOOTSTRAP_SERVERS`` / ``$DATABASE_URL`` name running ones, once per
session: ``kafka_bootstrap`` and ``database_url``. A project's own fixture of
the same name takes precedence over these.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from kafka_retry._typed import AnyHandler
from kafka_retry.config import Config
from kafka_retry.runtime.consumer import Consumer
from kafka_retry.testing._broker import MemoryBroker
from kafka_retry.testing._clock import VirtualClock
from kafka_retry.testing._harness import MakeTestConsumer, TestConsumer

__all__ = [
    "database_url",
    "kafka_bootstrap",
    "make_test_consumer",
    "memory_broker",
    "virtual_clock",
]


@pytest.fixture
def virtual_clock() -> VirtualClock:
    """A :class:`VirtualClock` reading the real time at first."""
    return VirtualClock()


@pytest.fixture
def memory_broker(virtual_clock: VirtualClock) -> MemoryBroker:
    """An empty :class:`MemoryBroker` whose timestamps come from ``virtual_clock``."""
    return MemoryBroker(clock=virtual_clock)


@pytest.fixture(name="test_consumer")
def make_test_consumer(
    memory_broker: MemoryBroker, virtual_clock: VirtualClock
) -> MakeTestConsumer:
    """Make TestConsumers on ``memory_broker`` and ``virtual_clock``; run each with ``async with``.

    ``test_consumer(consumer_or_config, handlers=None, *, batch_handlers=None, partitions=1)``.
    """

    def make(
        consumer: Consumer | Config,
        handlers: Mapping[str, AnyHandler] | None = None,
        *,
        batch_handlers: Mapping[str, AnyHandler] | None = None,
        partitions: int = 1,
    ) -> TestConsumer:
        return TestConsumer(
            consumer,
            handlers,
            batch_handlers=batch_handlers,
            broker=memory_broker,
            clock=virtual_clock,
            partitions=partitions,
        )

    return make


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """``host:port`` of a reachable Kafka broker for the session.

    ``$KAFKA_BOOTSTRAP_SERVERS`` if set; else a devstack broker, reused if it
    runs already, stopped at the end if this fixture started it. The Tansu
    broker (``$KAFKA_RETRY_TEST_BROKER=tansu``) refuses idempotent producers:
    use ``Config(idempotence=False)`` there.
    """
    from kafka_retry import devstack

    kind = devstack.select_broker()
    if kind == "external":
        yield devstack.start_kafka().bootstrap_servers
        return
    state_dir = worker_state_dir(kind)
    started = not devstack.is_running(kind, state_dir)
    service = devstack.start_kafka(kind, state_dir)
    try:
        yield service.bootstrap_servers
    finally:
        if started:
            devstack.stop(kind, state_dir)


def worker_state_dir(kind: str) -> Path | None:
    """The devstack state dir for ``kind`` in this pytest process (None: the default).

    Under pytest-xdist each worker runs its own Tansu (it starts in
    milliseconds): a shared one would be stopped by whichever worker started
    it, under the others' feet. Apache Kafka is too heavy to run per worker.
    """
    from kafka_retry import devstack

    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if kind != "tansu" or not worker:
        return None
    return devstack.default_state_dir() / f"worker-{worker}"


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A ``postgresql://`` URL of a reachable database for the session.

    ``$DATABASE_URL`` if set; else a devstack PostgreSQL, reused if it runs
    already, stopped at the end if this fixture started it.
    """
    from kafka_retry import devstack

    external = bool(os.environ.get("DATABASE_URL", "").strip())
    started = not external and not devstack.is_running("postgres")
    service = devstack.start_postgres()
    try:
        yield service.url
    finally:
        if started:
            devstack.stop("postgres")
