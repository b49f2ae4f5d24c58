"""The documentation's samples that need Kafka or PostgreSQL run against the test services.

Each page runs whole, in-memory samples included, so the service samples can
use what earlier samples of their page defined. Around them, as an operator
would before a first start, every consumer's main topics are created; the
consumers' group timeouts are shortened, and idempotence is turned off on a
broker without producer ids (Tansu), as everywhere in the integration suite.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from kafka_retry import Consumer, ConsumerState
from kafka_retry.testing import MemoryTransport
from tests.docs_support import ROOT, Sample, Services, pages, run_page, samples

from .support import create_topics

pytestmark = pytest.mark.integration

SERVICE_PAGES = [page for page in pages() if any(s.requires for s in samples(page))]
# How long a sample's main() may take to get every consumer it started ready.
_READY_WITHIN = 120.0
_STOP_WITHIN = 60.0


def _drive(started: list[Consumer]) -> Callable[[Callable[[], Any], Sample], None]:
    """Run a sample's main() until its consumers are ready, then stop them."""

    def drive(main: Callable[[], Any], sample: Sample) -> None:
        started.clear()

        async def go() -> None:
            task = asyncio.ensure_future(main())
            loop = asyncio.get_running_loop()
            deadline = loop.time() + _READY_WITHIN
            while not task.done():
                if started and all(c.state is ConsumerState.RUNNING for c in started):
                    break
                if loop.time() > deadline:
                    task.cancel()
                    raise AssertionError(f"{sample.where}: main() was not ready in time")
                await asyncio.sleep(0.05)
            for consumer in started:
                consumer.request_stop()
            await asyncio.wait_for(task, _STOP_WITHIN)

        asyncio.run(go())

    return drive


@pytest.mark.parametrize(
    "page", SERVICE_PAGES, ids=[str(p.relative_to(ROOT)) for p in SERVICE_PAGES]
)
def test_samples_run_against_services(
    page: Path, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every sample of the page runs, the ones needing Kafka or PostgreSQL included."""
    kafka = request.getfixturevalue("kafka_service")
    needs = set().union(*(sample.requires for sample in samples(page)))
    database_url = request.getfixturevalue("database_url") if "postgres" in needs else None
    bootstrap: str = kafka.bootstrap_servers
    services = Services(bootstrap, kafka.supports_idempotence, database_url, kafka.kind != "tansu")
    started: list[Consumer] = []
    run = Consumer.run

    async def run_with_topics(self: Consumer) -> None:
        if not isinstance(self._transport, MemoryTransport):
            self.config = attrs.evolve(
                self.config,
                idempotence=self.config.idempotence and kafka.supports_idempotence,
                session_timeout_ms=6000,
                rebalance_timeout_ms=4000,
                drain_timeout=2.0,  # no page sets one; the rebalance must cover it
            )
            await create_topics(bootstrap, *self.config.topics)
            started.append(self)
        await run(self)

    monkeypatch.setattr(Consumer, "run", run_with_topics)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    monkeypatch.setenv("KAFKA_GROUP", f"docs-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("KAFKA_TOPICS", f"docs-{uuid.uuid4().hex[:8]}")
    if database_url is not None:
        monkeypatch.setenv("DATABASE_URL", database_url)
    ran = run_page(page, tmp_path, services=services, drive_main=_drive(started))
    expected = [s for s in samples(page) if s.not_run is None and s.requires <= services.available]
    assert ran == expected
