"""What a retry backend builds its tiers with: dispatchers, and Kafka tiers on shared clients."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import attrs

from kafka_retry import _kafka
from kafka_retry._batch import BatchHandler
from kafka_retry._clock import Clock
from kafka_retry._kafka import KafkaTransport
from kafka_retry._observe import Observer
from kafka_retry._transaction import TierTransaction
from kafka_retry.config import Config
from kafka_retry.retry.base import DeadLetterSink, RetryBackend
from kafka_retry.runtime._calm import FailureLog
from kafka_retry.runtime.breaker import Breakers
from kafka_retry.runtime.dispatch import Dispatcher, Handler
from kafka_retry.runtime.tier import KafkaTier

__all__ = ["TierBuilder"]


@attrs.frozen
class TierBuilder:
    """The consumer's parts that tiers are made of, handed to its retry backend.

    The consumer builds its main tier with it, and the backend its retry tiers,
    so both backends wire tiers the same way and the consumer only runs them.

    Attributes:
        config: The consumer's settings.
        handlers: Handler per main topic.
        clock: Time source.
        observer: Receives what happens.
        transport: Makes the Kafka clients.
        producer: The consumer's started producer (hand-offs to topics use it);
            None with ``exactly_once``, where each tier has its own.
        stack: Closes what is opened here, after the tiers have ended.
        batch_handlers: Batch handler per main topic (the topics not in ``handlers``).
        breakers: The circuit breakers, one per main topic, shared by every tier.
        failure_log: Logs handler failures calmly, for every tier.
    """

    config: Config
    handlers: Mapping[str, Handler]
    clock: Clock
    observer: Observer
    transport: KafkaTransport
    producer: Any
    stack: contextlib.AsyncExitStack
    batch_handlers: Mapping[str, BatchHandler] = attrs.field(factory=dict)
    breakers: Breakers | None = None
    failure_log: FailureLog | None = None
    _transactions: dict[str, TierTransaction] = attrs.field(factory=dict, init=False)

    async def handoff_producer(
        self, tier: str, group_id: str
    ) -> tuple[Any, TierTransaction | None]:
        """The producer that tier ``tier``'s hand-offs go through, and its transaction.

        Without ``exactly_once``: the consumer's producer, no transaction. With
        it: the tier's own transactional producer (started, closed with the
        stack) and the transaction that commits the hand-offs with the offsets
        of group ``group_id``; :meth:`kafka_tier` gives the tier the same one.

        Raises:
            SetupError: The broker has no transactions.
            ServiceUnavailableError: Kafka stayed unreachable for every attempt.
        """
        if not self.config.exactly_once:
            return self.producer, None
        transaction = self._transactions.get(tier)
        if transaction is None:
            config = self.config
            producer = await _kafka.start_transactional_producer(config, self.transport, tier)
            name = f"producer {_kafka.transactional_id(config, tier)}"
            self.stack.push_async_callback(_kafka.close_within_bound, name, producer.stop)
            transaction = TierTransaction(producer, group_id, _kafka.transactional_id(config, tier))
            self._transactions[tier] = transaction
        return transaction.producer, transaction

    def dispatcher(
        self,
        tier: str,
        main_of: Mapping[str, str],
        attempt: int,
        retry: RetryBackend,
        dead_letters: DeadLetterSink,
    ) -> Dispatcher:
        """A dispatcher for tier ``tier``, whose records of topic ``t`` belong to ``main_of[t]``."""
        return Dispatcher(
            config=self.config,
            handlers=self.handlers,
            main_of=main_of,
            attempt=attempt,
            retry=retry,
            dead_letters=dead_letters,
            clock=self.clock,
            observer=self.observer,
            tier=tier,
            batch_handlers=self.batch_handlers,
            breakers=self.breakers,
            failure_log=self.failure_log,
        )

    async def kafka_tier(
        self, group_id: str, dispatcher: Dispatcher, delay: float | None
    ) -> KafkaTier:
        """A Kafka tier reading ``dispatcher``'s topics in group ``group_id``, started.

        Args:
            group_id: The tier's consumer group.
            dispatcher: Runs the tier's handlers.
            delay: The tier's retry interval in seconds; None for the main tier.

        Raises:
            ServiceUnavailableError: Kafka stayed unreachable for every attempt.
        """
        config = self.config
        name = dispatcher.tier
        reset = config.auto_offset_reset if delay is None else "earliest"
        consumer = self.transport.consumer(config, group_id, name, reset)
        self.stack.push_async_callback(consumer.stop)
        await _kafka.start_within_bound(config, "Kafka", consumer.start)
        if config.exactly_once:
            await self.handoff_producer(name, group_id)  # a tier with no hand-offs commits too
        return KafkaTier(
            name,
            config,
            consumer,
            dispatcher.topics,
            dispatcher,
            delay,
            self.clock,
            self.observer,
            transaction=self._transactions.get(name),
        )
