"""The shared scenarios against a real broker (their in-memory run is in tests/unit/testing)."""

from __future__ import annotations

from typing import Any

import pytest

from .scenarios import POSTGRES_SCENARIOS, SCENARIOS, KafkaHarness, Scenario

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
async def test_scenario_on_kafka(scenario: Scenario, kafka_service: Any) -> None:
    """Each scenario's observable results hold against a real broker (Kafka retry topics)."""
    await scenario(KafkaHarness(kafka_service))


@pytest.mark.parametrize("scenario", SCENARIOS + POSTGRES_SCENARIOS, ids=lambda s: s.__name__)
async def test_scenario_on_postgres(
    scenario: Scenario, kafka_service: Any, database_url: str, db_schema: str
) -> None:
    """Each scenario's observable results hold against a real broker and PostgreSQL."""
    await scenario(KafkaHarness(kafka_service, database_url, db_schema))
