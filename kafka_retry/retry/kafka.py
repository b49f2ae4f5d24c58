"""The Kafka retry backend: failures go to retry topics, then the dead-letter topic."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any

import attrs
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from kafka_retry._clock import Clock
from kafka_retry._observe import NullObserver, Observer
from kafka_retry._transaction import TierTransaction
from kafka_retry.message import Header, Message
from kafka_retry.retry._batches import TOO_LARGE, BatchTooLarge, PartitionBatches, partition_for
from kafka_retry.retry._tickets import ride
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
            forwarder = KafkaForwarder(
                producer,
                chains,
                config.retry_intervals,
                builder.clock,
                builder.observer,
                transaction=transaction,
            )
            await forwarder.learn_partitions()
            return forwarder

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
        self._routes: dict[tuple[str, int, bool], tuple[str, int, list[int] | None]] = {}

    async def learn_partitions(self) -> None:
        """Look up the partitions of every topic it may send to (the topics exist by now).

        Until a topic's partitions are known, its failures take the ordinary
        path: at the start of a storm, thousands of them.
        """
        for chain in self._chains.values():
            for topic in (*chain.retries, chain.dead_letter):
                if topic not in self._partitions:
                    self._partitions[topic] = sorted(await self._producer.partitions_for(topic))

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

    def start(self, failure: Failure) -> asyncio.Future[None]:
        """Start handing ``failure`` on (retry topic, or dead letter if final), without a task.

        The record joins the open batch of its target partition; the future
        returned is shared with the other failures of the same source partition
        on that batch and done once the batch is acknowledged. A failed batch
        sends each of its records again the ordinary way (:meth:`schedule`,
        :meth:`dead_letter`: backoff, too-large fallback). Inside a transaction
        (``exactly_once``), for a topic whose partitions are not known yet, or
        for a record too large for a batch, it is the ordinary way at once.
        """
        message = failure.message
        route = self._routes.get((message.main_topic, failure.attempts, failure.final))
        if route is None:
            route = self._route(message.main_topic, failure.attempts, failure.final)
        topic, delay_ms, partitions = route
        if partitions is not None:
            headers = failure.carried_headers(failure.failed_at + delay_ms)
            timestamp = message.timestamp if message.timestamp >= 0 else None
            tp = (topic, partition_for(message.key, message.partition, partitions))
            batch = self._batches.add(tp, message.key, message.value, timestamp, headers)
            if batch is not None:
                return ride(batch.tickets, batch.receipt, failure, self._resend)
        return asyncio.ensure_future(self._resend(failure))

    def _route(
        self, main_topic: str, attempts: int, final: bool
    ) -> tuple[str, int, list[int] | None]:
        """Where :meth:`start` sends a failure: topic, delay (ms) and its partitions.

        No partitions (the ordinary path) inside a transaction, or before they are known.
        """
        chain = self._chains[main_topic]
        if final:
            topic, delay_ms = chain.dead_letter, 0
        else:
            topic = chain.next_after(attempts)
            delay_ms = round(self._intervals[attempts - 1] * 1000)
        partitions = self._partitions.get(topic) if self._transaction is None else None
        route = (topic, delay_ms, partitions)
        if partitions is not None:
            self._routes[main_topic, attempts, final] = route
        return route

    def _resend(self, failure: Failure) -> Coroutine[Any, Any, None]:
        return self.dead_letter(failure) if failure.final else self.schedule(failure)

    async def _send(
        self, topic: str, failure: Failure, due_at: int, *, give_up_if_too_large: bool = False
    ) -> None:
        message = failure.message
        headers = failure.carried_headers(due_at)
        backoff = _BACKOFF_FIRST
        alone = False
        while True:
            try:
                await self._produce(topic, message, headers, alone=alone)
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
        self, topic: str, message: Message, headers: Sequence[Header], *, alone: bool
    ) -> None:
        """Send one record; return once it is acknowledged."""
        timestamp = message.timestamp if message.timestamp >= 0 else None
        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = sorted(await self._producer.partitions_for(topic))
            self._partitions[topic] = partitions
        partition = partition_for(message.key, message.partition, partitions)
        if not alone:
            batch = self._batches.add(
                (topic, partition), message.key, message.value, timestamp, headers
            )
            if batch is not None:
                # Shielded: the receipt is shared; cancelling this send must not cancel it.
                await asyncio.shield(batch.receipt)
                return
        # A batch of its own, which also takes a record without key and value
        # (aiokafka's send() refuses those; Kafka and other clients do not).
        single = self._producer.create_batch()
        single.append(key=message.key, value=message.value, timestamp=timestamp, headers=headers)
        single.close()
        await (await self._producer.send_batch(single, topic, partition=partition))
