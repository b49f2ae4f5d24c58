"""The Kafka retry backend: failures go to retry topics, then the dead-letter topic."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import attrs
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from kafka_retry._clock import Clock
from kafka_retry._observe import NullObserver, Observer
from kafka_retry._transaction import TierTransaction
from kafka_retry.message import Header, Message, producible_headers, with_provenance
from kafka_retry.retry._batches import TOO_LARGE, BatchTooLarge, PartitionBatches, partition_for
from kafka_retry.retry.base import BackendParts, Failure
from kafka_retry.runtime.builder import TierBuilder
from kafka_retry.runtime.tier import Tier
from kafka_retry.topology import TopicChain

__all__ = ["KafkaBackend", "KafkaForwarder", "retry_group_id"]

log = logging.getLogger("kafka_retry")

_BACKOFF_FIRST = 0.2
_BACKOFF_MAX = 10.0
_TOO_LARGE = TOO_LARGE
_RAISE_LIMIT = (
    ": the record is too large for the topic; it waits (its offset is not committed,"
    " nothing is lost) until the topic's max.message.bytes is raised"
)


def retry_group_id(group: str, tier: int) -> str:
    """The consumer group of retry tier ``tier``: its own, so it never rebalances the main tier."""
    return f"{group}.retry{tier}"


class KafkaBackend:
    """The Kafka backend: failures go to retry topics, one Kafka tier reads each.

    Retry tier ``k`` reads ``retry<k>`` of every main topic in its own group
    (:func:`retry_group_id`) and waits for each record's due time by pausing
    its partition; its failures go on to ``retry<k+1>`` or the dead-letter topic.
    """

    async def open(self, builder: TierBuilder) -> BackendParts:
        """A forwarder per tier, and one started Kafka tier per interval.

        Each forwarder sends on :meth:`TierBuilder.handoff_producer` of its tier:
        the consumer's producer, or with ``exactly_once`` the tier's own
        transactional one, inside that tier's transaction.
        """
        config = builder.config
        chains = {topic: config.chain(topic) for topic in config.topics}

        async def forwarder(tier: str, group_id: str) -> KafkaForwarder:
            producer, transaction = await builder.handoff_producer(tier, group_id)
            return KafkaForwarder(
                producer,
                chains,
                config.retry_intervals,
                builder.clock,
                builder.observer,
                transaction=transaction,
            )

        main = await forwarder("main", config.group)
        tiers: list[Tier] = []
        for tier, interval in enumerate(config.retry_intervals, start=1):
            main_of = {chains[topic].retries[tier - 1]: topic for topic in config.topics}
            group_id = retry_group_id(config.group, tier)
            own = await forwarder(f"retry{tier}", group_id)
            dispatcher = builder.dispatcher(f"retry{tier}", main_of, tier + 1, own, own)
            tiers.append(await builder.kafka_tier(group_id, dispatcher, interval))
        return BackendParts(retry=main, dead_letters=main, tiers=tiers)


class KafkaForwarder:
    """Produces failed messages to the next topic of their chain.

    Serves as both the :class:`~kafka_retry.retry.base.RetryBackend` and the
    :class:`~kafka_retry.retry.base.DeadLetterSink` of the Kafka backend. A send
    that fails (broker down, timeout) is retried with capped exponential backoff
    until it is acknowledged or the caller is cancelled; the caller's offset is
    not done before then, so nothing is lost. Records bound for one partition
    are sent in batches, one in flight while the next fills (see
    :mod:`._batches`): a failure storm costs a request per partition and round
    trip, not one per failure.

    A record that its retry topic refuses as too large is dead-lettered at once
    (the error text says so). One that the dead-letter topic refuses too is
    retried like an outage, logged as an error that says to raise the topic's
    ``max.message.bytes``: dropping it would lose it.
    """

    def __init__(
        self,
        producer: AIOKafkaProducer,
        chains: Mapping[str, TopicChain],
        intervals: tuple[float, ...],
        clock: Clock,
        observer: Observer | None = None,
        *,
        transaction: TierTransaction | None = None,
    ) -> None:
        self._observer: Observer = observer or NullObserver()
        self._producer = producer
        self._transaction = transaction
        self._chains = chains
        self._intervals = intervals
        self._clock = clock
        self._batches = PartitionBatches(producer)
        self._partitions: dict[str, list[int]] = {}

    async def schedule(self, failure: Failure) -> None:
        """Send to the retry topic after ``failure.attempts``; due after its interval."""
        delay = self._intervals[failure.attempts - 1]
        due_at = failure.failed_at + round(delay * 1000)
        chain = self._chains[failure.message.main_topic]
        topic = chain.next_after(failure.attempts)
        try:
            await self._forward(topic, failure, due_at, give_up_if_too_large=True)
        except _TOO_LARGE as exc:
            # The retry topic can never take it; the dead letter may (or may be fixed).
            self._observer.forward_failed(topic, type(exc).__name__)
            log.error(
                "record %s[%d]@%d is too large for %s (%s); dead-lettering it instead",
                failure.message.topic,
                failure.message.partition,
                failure.message.offset,
                topic,
                exc,
                extra={"topic": topic, "error_type": type(exc).__name__},
            )
            reason = f"record too large for {topic} ({type(exc).__name__}); last error: "
            await self.dead_letter(
                attrs.evolve(failure, error_message=reason + failure.error_message, final=True)
            )

    async def dead_letter(self, failure: Failure) -> None:
        """Send to the dead-letter topic of the message's main topic."""
        chain = self._chains[failure.message.main_topic]
        await self._forward(chain.dead_letter, failure, failure.failed_at)

    async def _forward(
        self, topic: str, failure: Failure, due_at: int, *, give_up_if_too_large: bool = False
    ) -> None:
        """:meth:`_send`, inside the tier's transaction when there is one (``exactly_once``)."""
        if self._transaction is None:
            await self._send(topic, failure, due_at, give_up_if_too_large=give_up_if_too_large)
            return
        async with self._transaction.joined(failure.message):
            await self._send(topic, failure, due_at, give_up_if_too_large=give_up_if_too_large)

    async def _send(
        self, topic: str, failure: Failure, due_at: int, *, give_up_if_too_large: bool = False
    ) -> None:
        message = failure.message
        headers = with_provenance(producible_headers(message.headers), failure.provenance(due_at))
        backoff = _BACKOFF_FIRST
        alone = False
        while True:
            try:
                delivery = await self._produce(topic, message, headers, alone=alone)
                await delivery
                return
            except BatchTooLarge:
                # Refused with others: only on its own does the broker say whether
                # this record is the one too large.
                alone = True
            except KafkaError as exc:
                too_large = isinstance(exc, _TOO_LARGE)
                if too_large and give_up_if_too_large:
                    raise
                self._observer.forward_failed(topic, type(exc).__name__)
                log.log(
                    logging.ERROR if too_large else logging.WARNING,
                    "forward to %s failed (%s)%s; retrying in %.1fs",
                    topic,
                    exc,
                    _RAISE_LIMIT if too_large else "",
                    backoff,
                    extra={"topic": topic, "error_type": type(exc).__name__},
                )
                await self._clock.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)

    async def _produce(
        self, topic: str, message: Message, headers: list[Header], *, alone: bool
    ) -> Any:
        """Start sending one record; return the future of its acknowledgement."""
        timestamp = message.timestamp if message.timestamp >= 0 else None
        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = sorted(await self._producer.partitions_for(topic))
            self._partitions[topic] = partitions
        partition = partition_for(message.key, message.partition, partitions)
        if not alone:
            delivery = self._batches.add(
                (topic, partition), message.key, message.value, timestamp, headers
            )
            if delivery is not None:
                return delivery
        # A batch of its own, which also takes a record without key and value
        # (aiokafka's send() refuses those; Kafka and other clients do not).
        batch = self._producer.create_batch()
        batch.append(key=message.key, value=message.value, timestamp=timestamp, headers=headers)
        batch.close()
        return await self._producer.send_batch(batch, topic, partition=partition)
