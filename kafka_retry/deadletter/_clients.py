"""What both dead-letter stores hold: their clients' exit stack and a producer for replays."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from kafka_retry._kafka import AIOKafkaTransport, start_producer
from kafka_retry.config import Config
from kafka_retry.deadletter._replay import Outgoing


class StoreClients:
    """The clients a store opens, closed together; the producer only once a replay needs it.

    Args:
        config: The consumer's settings (servers and security for the producer).
    """

    def __init__(self, config: Config) -> None:
        self._config = config
        self._stack = contextlib.AsyncExitStack()
        self._producer: Any = None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every client (idempotent)."""
        await self._stack.aclose()

    async def _ensure_producer(self) -> Any:
        if self._producer is None:
            self._producer = await start_producer(self._config, AIOKafkaTransport())
            self._stack.push_async_callback(self._producer.stop)
        return self._producer


async def produce_all(producer: Any, records: Iterable[Outgoing]) -> None:
    """Send ``records`` and return once every one is acknowledged."""
    sends = [
        await producer.send(
            record.topic,
            key=record.key,
            value=record.value,
            headers=record.headers,
            timestamp_ms=record.timestamp,
        )
        for record in records
    ]
    await asyncio.gather(*sends)
