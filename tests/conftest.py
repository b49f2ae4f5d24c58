"""Shared fixtures: real services from the devstack, fresh names, fresh schemas.

Services start lazily, the first time a test asks for one, and once per
session; a service that this session started is stopped when it ends, while one
that was already running (``make services-up``) is reused and left alone.
``KAFKA_BOOTSTRAP_SERVERS`` and ``DATABASE_URL`` point the suite at running
services instead; ``KAFKA_RETRY_TEST_BROKER=tansu`` picks the Tansu broker.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import pytest

from kafka_retry import devstack
from kafka_retry.testing.pytest_plugin import worker_state_dir

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

_INTEGRATION = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under ``tests/integration`` as ``integration``."""
    for item in items:
        if _INTEGRATION in item.path.parents:
            item.add_marker(pytest.mark.integration)


def _forget_tracer_provider() -> None:
    """Let the next test set OpenTelemetry's global tracer provider (it may be set once)."""
    from opentelemetry import trace
    from opentelemetry.util._once import Once

    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None


@pytest.fixture(autouse=True)
def _fresh_tracer_provider() -> Iterator[None]:
    """A tracer provider that a test (or a docs sample) set is gone after it."""
    yield
    if "opentelemetry.trace" in sys.modules:
        _forget_tracer_provider()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The spans the test makes: an SDK tracer provider, set globally, exporting in memory."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _forget_tracer_provider()
    trace.set_tracer_provider(provider)
    yield exporter
    provider.shutdown()


@pytest.fixture(scope="session")
def kafka_service() -> Iterator[devstack.KafkaService]:
    """A reachable broker for the whole session (see the module docstring)."""
    kind = devstack.select_broker()
    if kind == "external":
        yield devstack.start_kafka()
        return
    state_dir = worker_state_dir(kind)
    started = not devstack.is_running(kind, state_dir)
    service = devstack.start_kafka(kind, state_dir)
    try:
        yield service
    finally:
        if started:
            devstack.stop(kind, state_dir)


@pytest.fixture(scope="session")
def postgres_service() -> Iterator[devstack.PostgresService]:
    """A reachable PostgreSQL database for the whole session."""
    external = bool(os.environ.get("DATABASE_URL", "").strip())
    started = not external and not devstack.is_running("postgres")
    service = devstack.start_postgres()
    try:
        yield service
    finally:
        if started:
            devstack.stop("postgres")


@pytest.fixture(scope="session")
def database_url(postgres_service: devstack.PostgresService) -> str:
    """The ``postgresql://`` URL of :func:`postgres_service`."""
    return postgres_service.url


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """A factory of names no other test uses: ``unique_name("orders")`` -> ``orders-1a2b3c4d``."""

    def make(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:8]}"

    return make


async def _execute(database_url: str, statement: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture
async def db_schema(database_url: str) -> AsyncIterator[str]:
    """The name of a fresh, empty schema, dropped with its contents after the test."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    await _execute(database_url, f'CREATE SCHEMA "{name}"')
    yield name
    await _execute(database_url, f'DROP SCHEMA "{name}" CASCADE')
