"""The Kafka retry backend: failures go to retry topics, then the dead-letter topic."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from kafka_retry._clock import Clock
from kafka_retry._observe import NullObserver, Observer
from kafka_retry.message import with_provenance
from kafka_retry.retry.base import Failure
from kafka_retry.topology import TopicChain

__all__ = ["KafkaForwarder"]

log = logging.getLogger("kafka_retry")

_BACKOFF_FIRST = 0.2
_BACKOFF_MAX = 10.0


class KafkaForwarder:
    """Produces failed messages to the next topic of their chain.

    Serves as both the :class:`~kafka_retry.retry.base.RetryBackend` and the
    :class:`~kafka_retry.retry.base.DeadLetterSink` of the Kafka backend. A send
    that fails (broker down, timeout) is retried with capped exponential backoff
    until it is acknowledged or the caller is cancelled; the caller's offset is
    not done before then, so nothing is lost.
    """

    def __init__(
        self,
        producer: AIOKafkaProducer,
        chains: Mapping[str, TopicChain],
        intervals: tuple[float, ...],
        clock: Clock,
        observer: Observer | None = None,
    ) -> None:
        self._observer: Observer = observer or NullObserver()
        self._producer = producer
        self._chains = chains
        self._intervals = intervals
        self._clock = clock

    async def schedule(self, failure: Failure) -> None:
        """Send to the retry topic after ``failure.attempts``; due after its interval."""
        delay = self._intervals[failure.attempts - 1]
        due_at = failure.failed_at + round(delay * 1000)
        chain = self._chains[failure.message.main_topic]
        await self._send(chain.next_after(failure.attempts), failure, due_at)

    async def dead_letter(self, failure: Failure) -> None:
        """Send to the dead-letter topic of the message's main topic."""
        chain = self._chains[failure.message.main_topic]
        await self._send(chain.dead_letter, failure, failure.failed_at)

    async def _send(self, topic: str, failure: Failure, due_at: int) -> None:
        message = failure.message
        headers = with_provenance(message.headers, failure.provenance(due_at))
        backoff = _BACKOFF_FIRST
        while True:
            try:
                delivery = await self._producer.send(
                    topic,
                    value=message.value,
                    key=message.key,
                    headers=headers,
                    timestamp_ms=message.timestamp if message.timestamp >= 0 else None,
                )
                await delivery
                return
            except KafkaError as exc:
                self._observer.forward_failed(topic, type(exc).__name__)
                log.warning(
                    "forward to %s failed (%s); retrying in %.1fs",
                    topic,
                    exc,
                    backoff,
                    extra={"topic": topic, "error_type": type(exc).__name__},
                )
                await self._clock.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
