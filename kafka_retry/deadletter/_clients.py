"""What both dead-letter stores hold: their clients' exit stack and a producer for replays."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import attrs

from kafka_retry._kafka import AIOKafkaTransport, start_producer
from kafka_retry._produce import start_send
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


@attrs.frozen
class Sent:
    """What :func:`produce_all` got done.

    Attributes:
        acked: Positions (in the order given) of the records the broker acknowledged.
        error: Why the others were not, or None when every one was.
    """

    acked: list[int]
    error: BaseException | None

    def raise_error(self) -> None:
        """Raise :attr:`error`, if there is one."""
        if self.error is not None:
            raise self.error


async def produce_all(producer: Any, records: Sequence[Outgoing]) -> Sent:
    """Send ``records``; return once each is acknowledged or has failed.

    A send that fails stops the sending of the rest, but the records already
    sent are still waited for: the caller marks those as replayed, so that a
    later replay does not send them twice.
    """
    sends: list[Any] = []
    error: BaseException | None = None
    for spread, record in enumerate(records):
        try:
            sends.append(
                await start_send(
                    producer,
                    record.topic,
                    record.key,
                    record.value,
                    record.headers,
                    record.timestamp,
                    spread,
                )
            )
        except Exception as exc:
            error = exc
            break
    outcomes = await asyncio.gather(*sends, return_exceptions=True)
    acked = [i for i, outcome in enumerate(outcomes) if not isinstance(outcome, BaseException)]
    failed = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    return Sent(acked, error or (failed[0] if failed else None))
