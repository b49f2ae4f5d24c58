"""Fixtures of the fault suite; it runs only when asked for with ``-m faults``.

The suite starts its own Apache Kafka and PostgreSQL in a private state
directory (it stops and restarts them), so it never disturbs services that
others share (``KAFKA_RETRY_FAULTS_DIR`` names their state directory).
``KAFKA_RETRY_FAULTS_N`` sets the messages per large scenario (default
20,000); ``KAFKA_RETRY_FAULTS_SEED`` replays the random fault moments.
Each scenario's line (messages, lost, duplicates, seconds to recover) is
printed at the end of the run.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.services import Cluster, Services

_REPORT = pytest.StashKey[list[str]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the fault suite unless the ``-m`` expression names it."""
    if "faults" in (config.getoption("markexpr") or ""):
        return
    kept = [item for item in items if item.get_closest_marker("faults") is None]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print one line per fault scenario."""
    lines = terminalreporter.config.stash.get(_REPORT, [])
    if lines:
        terminalreporter.section("fault scenarios")
        for line in lines:
            terminalreporter.line(line)


@pytest.fixture(scope="session")
def fault_services() -> Iterator[Services]:
    """The suite's own Kafka and PostgreSQL, stopped and deleted at the end.

    They live in ``$KAFKA_RETRY_FAULTS_DIR`` if set (so that a CI script can
    stop them even if pytest is killed), else in a fresh temporary directory.
    """
    chosen = os.environ.get("KAFKA_RETRY_FAULTS_DIR", "").strip()
    services = Services.start(Path(chosen) if chosen else None)
    try:
        yield services
    finally:
        services.close()


@pytest.fixture(scope="session")
def fault_cluster(fault_services: Services) -> Iterator[Cluster]:
    """A 3-node Kafka cluster of the suite's own, started on first use, stopped at the end.

    It lives in ``cluster/`` of the suite's state directory, so that a CI
    script can stop it (``--state-dir <dir>/cluster down``) even if pytest is killed.
    """
    cluster = Cluster.start(fault_services.state_dir / "cluster")
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def fault_count() -> int:
    """Messages per large scenario: ``$KAFKA_RETRY_FAULTS_N``, default 20,000."""
    return int(os.environ.get("KAFKA_RETRY_FAULTS_N", "20000"))


@pytest.fixture
def fault_random(request: pytest.FixtureRequest) -> random.Random:
    """Randomness for fault moments, seeded from ``$KAFKA_RETRY_FAULTS_SEED`` if set."""
    seed = int(os.environ.get("KAFKA_RETRY_FAULTS_SEED") or random.randrange(2**32))
    request.node.user_properties.append(("seed", seed))
    print(f"fault seed {seed} (KAFKA_RETRY_FAULTS_SEED={seed} replays it)")
    return random.Random(seed)


@pytest.fixture
def fault_report(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """Lines a scenario adds here are printed in the summary."""
    lines: list[str] = []
    yield lines
    request.config.stash.setdefault(_REPORT, []).extend(lines)
