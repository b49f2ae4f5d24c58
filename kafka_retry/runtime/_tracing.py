"""OpenTelemetry spans for handler calls and hand-offs, with ``Config(tracing=True)``.

Only :class:`~kafka_retry.runtime.dispatch.Dispatcher` imports this module, and
only for a config with ``tracing`` on: it imports the OpenTelemetry API, which
a consumer without tracing never loads.

Every handler call is a CONSUMER span ``process <main topic>`` whose parent is
the trace context of the record's own headers (``traceparent``/``tracestate``,
read with the configured propagator), on every attempt: the original headers
travel through the tiers unchanged, so every attempt joins the producer's
trace. A retry's span also links to the span of the attempt that failed before
it, whose context travels as :attr:`~kafka_retry.Provenance.span` (the
``kafka-retry-span`` header, or the retry row's ``last_span``).

Batch handlers are not traced yet: a batch call would be one span whose links
are :func:`message_links` of each message (parents from :func:`parent_context`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import AttributeValue

from kafka_retry.config import Config
from kafka_retry.message import Header, Message, is_traceparent
from kafka_retry.retry.base import Failure, describe_error

if TYPE_CHECKING:
    from kafka_retry.runtime.dispatch import Call, HandOff

__all__ = [
    "Tracing",
    "message_links",
    "parent_context",
    "process_attributes",
    "span_context",
    "traceparent",
]

_SCOPE = "kafka_retry"
#: An event on the span of an attempt whose message goes to the dead letter.
DEAD_LETTER_EVENT = "kafka_retry.dead_letter"

Attributes = dict[str, AttributeValue]


class _HeaderGetter(Getter[Sequence[Header]]):
    """Reads propagation fields from Kafka headers (names compared without case, as W3C does)."""

    def get(self, carrier: Sequence[Header], key: str) -> list[str] | None:
        key = key.lower()
        found = [
            value.decode("latin-1")  # never fails; the propagator checks the form
            for name, value in carrier
            if value is not None and name.lower() == key
        ]
        return found or None

    def keys(self, carrier: Sequence[Header]) -> list[str]:
        return [name for name, _ in carrier]


_GETTER = _HeaderGetter()


def traceparent(context: SpanContext) -> str:
    """``context`` in W3C ``traceparent`` form, as :attr:`~kafka_retry.Provenance.span` holds it."""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def span_context(text: str | None) -> SpanContext | None:
    """The remote span context a ``traceparent`` text names; None if it is not one."""
    if text is None or not is_traceparent(text):
        return None
    _, trace_id, span_id, flags = text.split("-")
    return SpanContext(
        int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=TraceFlags(int(flags, 16))
    )


def parent_context(message: Message) -> Context:
    """The trace context in the record's own headers; an empty one (a new trace) if none."""
    return propagate.extract(message.headers, context=Context(), getter=_GETTER)


def message_links(message: Message) -> list[Link]:
    """A link to the span of the attempt that failed before this one, if it is known."""
    previous = message.provenance
    context = span_context(previous.span) if previous is not None else None
    if context is None:
        return []
    return [Link(context, {"kafka_retry.attempt": message.attempt - 1})]


def process_attributes(message: Message, group: str, tier: str) -> Attributes:
    """The attributes of a handler call's span: messaging conventions and the attempt."""
    attributes: Attributes = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": message.topic,
        "messaging.destination.partition.id": str(message.partition),
        "messaging.kafka.message.offset": message.offset,
        "messaging.consumer.group.name": group,
        "kafka_retry.attempt": message.attempt,
        "kafka_retry.tier": tier,
    }
    if message.key is not None:
        # Only a key that is text: other bytes have no canonical string form.
        with contextlib.suppress(UnicodeDecodeError):
            attributes["messaging.kafka.message.key"] = message.key.decode("utf-8")
    if message.value is None:
        attributes["messaging.kafka.message.tombstone"] = True
    else:
        attributes["messaging.message.body.size"] = len(message.value)
    return attributes


class Tracing:
    """Makes spans for one tier's handler calls and hand-offs.

    Args:
        config: The consumer's settings.
        tier: The tier's name (``main``, ``retry1``, ...).
        final: Whether a handler error sends its message to the dead letter.
    """

    def __init__(self, config: Config, tier: str, final: Callable[[BaseException], bool]) -> None:
        self._tracer = trace.get_tracer(_SCOPE)
        self._config = config
        self._tier = tier
        self._final = final
        # A failed call's span, kept from the end of the call until its Failure is
        # built (right after, on every tier; by identity, as equal records may differ).
        self._failed: dict[int, tuple[Message, str]] = {}
        self._destinations: dict[tuple[str, bool, int], str] = {}

    def wrap(self, topic: str, call: Call) -> Call:
        """``call`` run inside a CONSUMER span ``process <topic>``."""
        name = f"process {topic}"
        group, tier, tracer = self._config.group, self._tier, self._tracer

        async def traced(message: Message) -> BaseException | None:
            span = tracer.start_span(
                name,
                context=parent_context(message),
                kind=SpanKind.CONSUMER,
                attributes=process_attributes(message, group, tier),
                links=message_links(message),
            )
            # Statuses are set here: a cancelled call is not a failed attempt.
            with trace.use_span(
                span, end_on_exit=True, record_exception=False, set_status_on_exception=False
            ):
                try:
                    error = await call(message)
                except asyncio.CancelledError:
                    span.add_event("kafka_retry.cancelled")
                    raise
                except BaseException as exc:  # KeyboardInterrupt and the like end the consumer
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                    raise
                if error is not None:
                    self._failed_call(span, message, error)
            return error

        return traced

    def _failed_call(self, span: Span, message: Message, error: BaseException) -> None:
        error_type, text = describe_error(error, self._config.error_max_length)
        span.record_exception(error)
        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR, f"{error_type}: {text}"))
        if self._final(error):
            span.add_event(DEAD_LETTER_EVENT, {"kafka_retry.attempt": message.attempt})
        context = span.get_span_context()
        if span.is_recording() and context.is_valid:
            self._failed[id(message)] = (message, traceparent(context))

    def failed_span(self, message: Message) -> str | None:
        """The span of ``message``'s failed call (``traceparent`` form), taken once; or None."""
        kept = self._failed.pop(id(message), None)
        return kept[1] if kept is not None and kept[0] is message else None

    def hand_off(self, failure: Failure, start: Callable[[Failure], HandOff]) -> HandOff:
        """The hand-off ``start(failure)`` run inside a child span of the failed attempt's span.

        PRODUCER ``send <topic>`` on the Kafka backend, CLIENT ``INSERT
        <schema.table>`` on the postgres backend. The hand-off is made only
        when the returned coroutine runs: one cancelled before it starts leaves
        no coroutine unawaited behind.
        """
        previous = span_context(failure.span)
        parent = trace.set_span_in_context(trace.NonRecordingSpan(previous)) if previous else None
        name, kind, attributes = self._hand_off_span(failure)

        async def traced() -> None:
            with self._tracer.start_as_current_span(
                name, context=parent, kind=kind, attributes=attributes
            ):
                await start(failure)

        return traced()

    def _hand_off_span(self, failure: Failure) -> tuple[str, SpanKind, Attributes]:
        common: Attributes = {
            "kafka_retry.attempt": failure.attempts,
            "kafka_retry.tier": self._tier,
            "kafka_retry.hand_off": "dead_letter" if failure.final else "retry",
        }
        database = self._config.database
        if self._config.retry_backend == "postgres" and database is not None:
            attributes: Attributes = {
                "db.system.name": "postgresql",
                "db.namespace": database.database,
                "db.collection.name": f"{database.schema}.{database.table}",
                "db.operation.name": "INSERT",
                **common,
            }
            return f"INSERT {database.schema}.{database.table}", SpanKind.CLIENT, attributes
        topic = self._destination(failure)
        attributes = {
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.destination.name": topic,
            **common,
        }
        return f"send {topic}", SpanKind.PRODUCER, attributes

    def _destination(self, failure: Failure) -> str:
        """The topic the Kafka backend sends ``failure`` to (kept per topic and attempt)."""
        key = (failure.message.main_topic, failure.final, failure.attempts)
        known = self._destinations.get(key)
        if known is None:
            chain = self._config.chain(failure.message.main_topic)
            known = chain.dead_letter if failure.final else chain.next_after(failure.attempts)
            self._destinations[key] = known
        return known
