"""The shared scenarios in memory: the same assertions as against a real broker, no services.

They live in ``tests/integration/scenarios.py``; this module runs them with the
in-memory harness, outside ``tests/integration`` so that they are not marked
``integration`` and run wherever the unit tests do.
"""

from __future__ import annotations

import pytest

from tests.integration.scenarios import (
    BACKENDS,
    POSTGRES_SCENARIOS,
    SCENARIOS,
    Backend,
    MemoryHarness,
    Scenario,
)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
async def test_scenario_in_memory(scenario: Scenario, backend: Backend) -> None:
    """Each scenario's observable results hold in memory, with either retry backend."""
    await scenario(MemoryHarness(backend))


@pytest.mark.parametrize("scenario", POSTGRES_SCENARIOS, ids=lambda s: s.__name__)
async def test_postgres_scenario_in_memory(scenario: Scenario) -> None:
    """Each postgres-only scenario's observable results hold in memory."""
    await scenario(MemoryHarness("postgres"))
