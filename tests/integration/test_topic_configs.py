"""Retry and dead-letter topics keep records at least as long as their main topic."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from kafka_retry._kafka import AIOKafkaTransport, ensure_topics, start_admin

from .support import config_for, fresh

THIRTY_DAYS_MS = 30 * 86_400_000
GIGABYTE = 1_000_000_000
RETENTION = ("retention.ms", "retention.bytes")


async def create_topic(bootstrap: str, topic: str, **configs: int) -> None:
    """Create ``topic`` with ``configs`` (underscores for dots: retention_ms=...)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topic_configs = {name.replace("_", "."): str(value) for name, value in configs.items()}
        await admin.create_topics([NewTopic(topic, 1, 1, topic_configs=topic_configs)])
    finally:
        await admin.close()


async def retention_of(bootstrap: str, topics: list[str]) -> dict[str, tuple[int, int]]:
    """``(retention.ms, retention.bytes)`` per topic, as the broker tells them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        resources = [
            ConfigResource(ConfigResourceType.TOPIC, t, dict.fromkeys(RETENTION)) for t in topics
        ]
        responses = await admin.describe_configs(resources)
    finally:
        await admin.close()
    found: dict[str, dict[str, int]] = {}
    for response in responses:
        for _code, _message, _kind, topic, entries in response.resources:
            for entry in entries:
                if entry[0] in RETENTION:
                    found.setdefault(topic, {})[entry[0]] = int(entry[1])
    return {t: (v["retention.ms"], v["retention.bytes"]) for t, v in found.items()}


async def ensure(config: Any) -> None:
    admin = await start_admin(config, AIOKafkaTransport())
    try:
        await ensure_topics(admin, config)
    finally:
        await admin.close()


@pytest.fixture
def apache_kafka(kafka_service: Any) -> Any:
    """The broker, if it honours topic configs as Apache Kafka does."""
    if kafka_service.kind == "tansu":
        pytest.skip("Tansu does not report topic configs")
    return kafka_service


async def test_new_chain_topics_keep_records_as_long_as_their_main_topic(
    apache_kafka: Any,
) -> None:
    """Retry topics get the main retention plus their waits; dead letters are kept forever."""
    topic = fresh()
    bootstrap = apache_kafka.bootstrap_servers
    await create_topic(bootstrap, topic, retention_ms=THIRTY_DAYS_MS, retention_bytes=GIGABYTE)
    config = config_for(apache_kafka, topics=[topic], retry_intervals=[60, 120.5])
    await ensure(config)
    retry1, retry2, dead_letter = config.topic_chain(topic)[1:]
    assert await retention_of(bootstrap, [retry1, retry2, dead_letter]) == {
        retry1: (THIRTY_DAYS_MS + 60_000, GIGABYTE),
        retry2: (THIRTY_DAYS_MS + 180_500, GIGABYTE),
        dead_letter: (-1, -1),
    }


async def test_dead_letter_retention_is_configurable(apache_kafka: Any) -> None:
    """dead_letter_retention_ms sets how long a new dead-letter topic keeps records."""
    topic = fresh()
    bootstrap = apache_kafka.bootstrap_servers
    await create_topic(bootstrap, topic, retention_ms=-1)
    config = config_for(
        apache_kafka, topics=[topic], retry_intervals=[60], dead_letter_retention_ms=86_400_000
    )
    await ensure(config)
    retry1, dead_letter = config.topic_chain(topic)[1:]
    found = await retention_of(bootstrap, [retry1, dead_letter])
    assert (found[retry1][0], found[dead_letter]) == (-1, (86_400_000, -1))


async def test_existing_topics_that_keep_less_are_warned_about(
    apache_kafka: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A retry or dead-letter topic made with a shorter retention is named in a warning."""
    topic = fresh()
    bootstrap = apache_kafka.bootstrap_servers
    await create_topic(bootstrap, topic, retention_ms=THIRTY_DAYS_MS)
    config = config_for(apache_kafka, topics=[topic], retry_intervals=[60])
    retry1, dead_letter = config.topic_chain(topic)[1:]
    await create_topic(bootstrap, retry1, retention_ms=7 * 86_400_000)
    await create_topic(bootstrap, dead_letter, retention_ms=7 * 86_400_000)
    caplog.set_level("WARNING", logger="kafka_retry")
    await ensure(config)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert [w.split(",")[0] for w in warnings] == [
        f"topic {retry1} has retention.ms=604800000",
        f"topic {dead_letter} has retention.ms=604800000",
    ]
    assert f"less than the {THIRTY_DAYS_MS + 60_000} it needs" in warnings[0]
    assert "less than the -1 it needs" in warnings[1]
    assert (await retention_of(bootstrap, [retry1]))[retry1][0] == 7 * 86_400_000  # left alone
