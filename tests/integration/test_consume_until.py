"""consume_until and the plugin's broker fixture against a real broker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kafka_retry import Consumer, ConsumerState, Message
from kafka_retry.testing import consume_until

from .support import config_for, create_topics, fresh, produce

pytestmark = pytest.mark.integration


async def test_consumes_until_the_condition_and_commits(kafka_service: Any) -> None:
    """True once the handler saw the record; the next run starts after it (it was committed)."""
    topic = fresh()
    bootstrap = kafka_service.bootstrap_servers
    await create_topics(bootstrap, topic)
    await produce(bootstrap, topic, [(b"k", b"v", [])])
    config = config_for(kafka_service, topics=[topic])
    seen: list[bytes | None] = []

    async def handler(message: Message) -> None:
        seen.append(message.value)

    assert await consume_until(config, lambda: seen == [b"v"], 30, {topic: handler})
    await produce(bootstrap, topic, [(b"k", b"after", [])])
    handled = asyncio.Event()

    async def set_when_after(message: Message) -> None:
        seen.append(message.value)
        if message.value == b"after":
            handled.set()

    consumer = Consumer(config, {topic: set_when_after})
    assert await consume_until(consumer, handled, timeout=30)
    assert consumer.state is ConsumerState.STOPPED
    assert seen == [b"v", b"after"]


def test_kafka_bootstrap_fixture_names_the_broker(kafka_bootstrap: str, kafka_service: Any) -> None:
    """The plugin's kafka_bootstrap reaches the same broker as the suite's kafka_service."""
    assert kafka_bootstrap == kafka_service.bootstrap_servers
