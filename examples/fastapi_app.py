"""A FastAPI service that runs a kafka-retry consumer beside its HTTP endpoints.

The consumer lives in the application's lifespan: it starts (and has joined
its groups) before the first request is served, and it drains, commits and
closes when the server shuts down. ``/health`` answers 200 while the consumer
is ready and 503 otherwise (a readiness probe); ``/health/live`` the same for
liveness; ``/metrics/`` serves Prometheus.

Run it with the settings in the environment::

    KAFKA_BOOTSTRAP_SERVERS=localhost:9092 KAFKA_GROUP=orders-service \\
    KAFKA_TOPICS=orders KAFKA_RETRY_INTERVALS=60,300 \\
    uvicorn examples.fastapi_app:app
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry

from kafka_retry import Config, Consumer, Message
from kafka_retry.metrics import asgi_app

log = logging.getLogger("orders-service")


async def handle(message: Message) -> None:
    """Do the work for one message; raising an exception sends it to the next retry tier."""
    log.info("handling %s[%d]@%d", message.topic, message.partition, message.offset)


def create_app(
    config: Config | None = None,
    handler: Callable[[Message], Awaitable[None]] = handle,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """The service: ``config`` defaults to ``Config.from_env()``, read at startup.

    ``handler`` serves every configured topic; ``registry`` holds the metrics
    (default: prometheus_client's global registry).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings = config if config is not None else Config.from_env()
        consumer = Consumer(
            settings, {topic: handler for topic in settings.topics}, registry=registry
        )
        app.state.consumer = consumer
        async with consumer:
            yield

    app = FastAPI(lifespan=lifespan)
    # A mounted app answers at /metrics/; /metrics redirects there, and Prometheus follows.
    app.mount("/metrics", asgi_app(registry))

    @app.get("/health")
    async def ready() -> JSONResponse:
        report = await app.state.consumer.health()
        return JSONResponse(report.as_dict(), status_code=200 if report.ready else 503)

    @app.get("/health/live")
    async def live() -> JSONResponse:
        report = await app.state.consumer.health()
        return JSONResponse(report.as_dict(), status_code=200 if report.live else 503)

    return app


app = create_app()
