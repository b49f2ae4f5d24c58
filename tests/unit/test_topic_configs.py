"""Retention of new retry and dead-letter topics, and warnings about existing ones."""

from __future__ import annotations

from kafka_retry import Config
from kafka_retry._kafka import ensure_topics
from kafka_retry._topic_configs import new_topic_configs, retention_shortfalls, wanted_retention
from kafka_retry.testing import MemoryAdmin, MemoryBroker

DAY_MS = 86_400_000


def make(**overrides: object) -> Config:
    fields: dict[str, object] = {
        "bootstrap_servers": "localhost:9092",
        "group": "g",
        "topics": ["t"],
        "retry_intervals": [60, 0.25],
    }
    fields.update(overrides)
    return Config(**fields)  # type: ignore[arg-type]


def test_retry_tiers_add_their_waits_to_the_main_retention() -> None:
    """Tier k keeps records for the main retention plus intervals 1..k; bytes as the main."""
    main = {"retention.ms": 30 * DAY_MS, "retention.bytes": 5}
    assert wanted_retention(make(), main, 1) == {
        "retention.ms": 30 * DAY_MS + 60_000,
        "retention.bytes": 5,
    }
    assert wanted_retention(make(), main, 2)["retention.ms"] == 30 * DAY_MS + 60_250


def test_a_main_topic_kept_forever_gives_retry_topics_kept_forever() -> None:
    """retention.ms=-1 on the main topic stays -1 on its retry topics."""
    assert wanted_retention(make(), {"retention.ms": -1}, 2) == {"retention.ms": -1}


def test_unknown_main_configs_leave_retry_topics_to_the_broker() -> None:
    """A broker that tells nothing: retry topics get its defaults; dead letters are kept."""
    assert new_topic_configs(make(), {}, 1) == {}
    assert new_topic_configs(make(), {}, None) == {"retention.ms": "-1", "retention.bytes": "-1"}


def test_dead_letter_retention_can_be_bounded() -> None:
    """dead_letter_retention_ms is the dead-letter topic's retention.ms."""
    config = make(dead_letter_retention_ms=DAY_MS)
    assert wanted_retention(config, {}, None)["retention.ms"] == DAY_MS


def test_only_topics_that_keep_less_are_reported() -> None:
    """Unlimited (-1) is more than any bound; a shorter bound is reported with its fix."""
    config = make()
    chain = config.chain("t")
    existing = {
        chain.retries[0]: {"retention.ms": -1, "retention.bytes": -1},
        chain.retries[1]: {"retention.ms": DAY_MS},
        chain.dead_letter: {"retention.ms": -1, "retention.bytes": 10},
    }
    found = retention_shortfalls(config, chain, {"retention.ms": 7 * DAY_MS}, existing)
    assert [line.split(",")[0] for line in found] == [
        f"topic {chain.retries[1]} has retention.ms={DAY_MS}",
        f"topic {chain.dead_letter} has retention.bytes=10",
    ]
    assert f"--add-config retention.ms={7 * DAY_MS + 60_250}" in found[0]


async def test_the_in_memory_broker_gets_the_same_topic_configs() -> None:
    """The test mode's admin creates the chain with the configs Kafka would get."""
    broker = MemoryBroker()
    broker.create_topic("t", 2, {"retention.ms": str(30 * DAY_MS), "max.message.bytes": "1000"})
    config = make()
    await ensure_topics(MemoryAdmin(broker), config)
    chain = config.chain("t")
    assert broker.topic_configs(chain.retries[1])["retention.ms"] == str(30 * DAY_MS + 60_250)
    assert broker.topic_configs(chain.dead_letter)["retention.ms"] == "-1"
    assert int(broker.topic_configs(chain.dead_letter)["max.message.bytes"]) > 1000
