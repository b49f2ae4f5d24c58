"""What a failure is, the two small interfaces that take failures on, and a backend.

A backend (:class:`Backend`: ``retry/kafka.py``, ``retry/postgres.py``) opens
its store and builds its retry tiers with the runtime's
:class:`~kafka_retry.runtime.builder.TierBuilder`; the consumer runs the tiers
it gets and hands the main tier's failures to its ``retry`` and ``dead_letters``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

import attrs

from kafka_retry.message import (
    Header,
    Message,
    Provenance,
    producible_headers,
    provenance_headers,
)

if TYPE_CHECKING:
    from kafka_retry.runtime.builder import TierBuilder
    from kafka_retry.runtime.tier import Tier

__all__ = [
    "Backend",
    "BackendParts",
    "BatchedHandOffs",
    "DeadLetterSink",
    "Failure",
    "KeyOrder",
    "RetryBackend",
]

#: One handler call of a tier: the error it failed with, or None.
MessageCall = Callable[[Message], Coroutine[Any, Any, "BaseException | None"]]
#: One batch handler call: per message, its error (or None); None when all succeeded.
BatchCall = Callable[[list[Message]], Coroutine[Any, Any, "list[BaseException | None] | None"]]
HandOff = Coroutine[Any, Any, None]


def describe_error(error: BaseException, max_length: int) -> tuple[str, str]:
    """``(qualified type name, message truncated to max_length characters)``."""
    name = _type_name(type(error))
    text = str(error) or name
    if len(text) > max_length:
        text = text[: max_length - 1] + "…"
    return name, text


#: Qualified names of the exception types seen: a storm fails with the same few.
_TYPE_NAMES: dict[type, str] = {}


def _type_name(kind: type) -> str:
    name = _TYPE_NAMES.get(kind)
    if name is None:
        name = (
            kind.__qualname__
            if kind.__module__ == "builtins"
            else f"{kind.__module__}.{kind.__qualname__}"
        )
        if len(_TYPE_NAMES) < 1024:  # classes made on the fly must not grow it forever
            _TYPE_NAMES[kind] = name
    return name


@attrs.frozen(slots=False)  # a dict class: attrs then sets fields in __init__ ~35% faster
class Failure:
    """A failed attempt at one message, to be handed to the next tier or the dead letter.

    Attributes:
        message: The message as the handler got it.
        error_type: Qualified name of the exception.
        error_message: Its text (truncated to ``Config.error_max_length``).
        failed_at: When it failed, milliseconds since the epoch.
        group: The consumer group.
        final: True when it goes to the dead letter (non-retryable or exhausted).
        span: The failed attempt's span (W3C ``traceparent`` form) when tracing
            is on, carried to the next attempt as :attr:`Provenance.span`.
    """

    message: Message
    error_type: str
    error_message: str
    failed_at: int
    group: str
    final: bool
    span: str | None = None

    @property
    def attempts(self) -> int:
        """Attempts made so far, this one included."""
        return self.message.attempt

    def original(self) -> tuple[str, int, int, int]:
        """Topic, partition, offset and timestamp of the record first consumed (attempt 1)."""
        message = self.message
        previous = message.provenance
        if previous is not None:
            return (
                previous.original_topic,
                previous.original_partition,
                previous.original_offset,
                previous.original_timestamp,
            )
        return message.topic, message.partition, message.offset, message.timestamp

    def provenance(self, due_at: int) -> Provenance:
        """Provenance for the record that carries this failure on."""
        topic, partition, offset, timestamp = self.original()
        return Provenance(
            attempts=self.attempts,
            original_topic=topic,
            original_partition=partition,
            original_offset=offset,
            original_timestamp=timestamp,
            group=self.group,
            failed_at=self.failed_at,
            due_at=due_at,
            error_type=self.error_type,
            error_message=self.error_message,
            span=self.span,
        )

    def carried_headers(self, due_at: int) -> list[Header]:
        """The headers of the record that carries this failure on: original, then provenance.

        What ``with_provenance(producible_headers(headers), provenance(due_at))``
        gives, without the Provenance in between.
        """
        message = self.message
        topic, partition, offset, timestamp = self.original()
        ours = provenance_headers(
            message.attempt,
            topic,
            partition,
            offset,
            timestamp,
            self.group,
            self.failed_at,
            due_at,
            self.error_type,
            self.error_message,
            self.span,
        )
        if not message.headers:
            return cast("list[Header]", ours)  # list is invariant; each is a Header
        return [*producible_headers(message.headers), *ours]


class RetryBackend(Protocol):
    """Durably hands a failed message to its next retry tier."""

    async def schedule(self, failure: Failure) -> None:
        """Return only once the next tier has the message for sure (acked or committed)."""


class DeadLetterSink(Protocol):
    """Durably stores a message that will not be retried automatically."""

    async def dead_letter(self, failure: Failure) -> None:
        """Return only once the dead letter is stored for sure."""


@runtime_checkable
class BatchedHandOffs(Protocol):
    """A backend that hands failures on in batches, without a task per failure.

    Both of its sides (``retry`` and ``dead_letters``) are the one object, and
    :meth:`start` serves either, by :attr:`Failure.final`.
    """

    def start(self, failure: Failure) -> asyncio.Future[None]:
        """Start the hand-off of ``failure``; the future is done once it is stored for sure.

        The future may be shared by other failures of the same source
        partition; holders other than that partition's worker must not cancel it.
        """


class KeyOrder(Protocol):
    """Keeps per-key order on the main tier (``ordered_retries``): what the dispatcher consults.

    A message whose key has an unsettled retry is stored behind it instead of
    being handled; the check is in memory, per held partition.
    """

    def assigned(self, topic: str, partition: int) -> None:
        """The main tier took ``partition`` of ``topic``: what was known of it is stale."""

    def wrap_call(self, call: MessageCall) -> MessageCall:
        """``call``, storing instead of handling a message whose key must wait."""

    def wrap_batch(self, call: BatchCall) -> BatchCall:
        """``call`` for a batch, storing instead of handling the messages that must wait."""

    def routed(self, failure: Failure, handoff: HandOff) -> HandOff:
        """``handoff`` of ``failure``, noting its key as unsettled before it starts."""


@attrs.frozen
class BackendParts:
    """What an opened backend gives the consumer to run.

    Attributes:
        retry: Takes the main tier's retryable failures.
        dead_letters: Takes the main tier's final failures.
        tiers: The retry tiers (and any housekeeping task), in tier order.
        pool: The database pool, for health and gauges; None without a database.
        key_order: Keeps per-key order on the main tier; None unless ``ordered_retries``.
    """

    retry: RetryBackend
    dead_letters: DeadLetterSink
    tiers: list[Tier]
    pool: Any = None
    key_order: KeyOrder | None = None


class Backend(Protocol):
    """A retry backend: where failures wait, and the tiers that retry them."""

    async def open(self, builder: TierBuilder) -> BackendParts:
        """Connect, prepare the store and build the retry tiers.

        What it opens is closed by ``builder.stack``, after the tiers have ended.

        Raises:
            ConfigError: The backend's settings are missing or invalid.
            ServiceUnavailableError: Its service stayed unreachable.
            SetupError: Its store could not be prepared.
        """
