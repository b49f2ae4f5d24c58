"""The FastAPI example: the consumer runs in the lifespan, /health and /metrics answer."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from examples.fastapi_app import create_app
from kafka_retry import Message

from .support import config_for, create_topics, eventually, fresh, produce

pytestmark = pytest.mark.integration


async def test_lifespan_runs_the_consumer_and_serves_health_and_metrics(
    kafka_service: Any,
) -> None:
    """Ready while running, messages counted in /metrics, and no task left after shutdown."""
    topic = fresh()
    bootstrap = kafka_service.bootstrap_servers
    await create_topics(bootstrap, topic)
    config = config_for(kafka_service, topics=[topic], retry_intervals=[1])
    handled: list[Message] = []

    async def handler(message: Message) -> None:
        handled.append(message)

    app = create_app(config, handler, CollectorRegistry())
    before = asyncio.all_tasks()
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://service") as client,
    ):
        health = await client.get("/health")
        assert health.status_code == 200
        body = health.json()
        assert (body["state"], body["ready"], body["live"]) == ("running", True, True)
        assert [tier["name"] for tier in body["tiers"]] == ["main", "retry1"]
        assert body["tiers"][0]["assignment"] == {topic: [0]}
        assert (await client.get("/health/live")).status_code == 200

        await produce(bootstrap, topic, [(b"k", b"v", [])])
        await eventually(lambda: len(handled) == 1)
        metrics = await client.get("/metrics", follow_redirects=True)
        assert metrics.status_code == 200
        counted = (
            f'kafka_retry_messages_handled_total{{outcome="success",tier="main",topic="{topic}"}}'
            " 1.0"
        )
        assert counted in metrics.text

        await app.state.consumer.stop()
        stopped = await client.get("/health")
        assert stopped.status_code == 503
        assert stopped.json()["state"] == "stopped"
        assert (await client.get("/health/live")).status_code == 503
    left = {task for task in asyncio.all_tasks() - before if not task.done()}
    assert not left, f"tasks left running: {left}"
