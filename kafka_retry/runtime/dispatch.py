"""Turning a record into a :class:`Message`, running its handler, routing a failure."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from time import perf_counter
from typing import TYPE_CHECKING, Any, cast

from kafka_retry._batch import BatchHandler
from kafka_retry._clock import Clock
from kafka_retry._observe import NullObserver, Observer
from kafka_retry.config import Config
from kafka_retry.errors import BatchFailed, NonRetryableError
from kafka_retry.message import (
    Message,
    decode_provenance,
    plain_message,
    plain_messages,
    split_headers,
)
from kafka_retry.retry.base import (
    BatchedHandOffs,
    DeadLetterSink,
    Failure,
    KeyOrder,
    RetryBackend,
    describe_error,
)
from kafka_retry.runtime._calm import FailureLog
from kafka_retry.runtime._guard import gated, retrying
from kafka_retry.runtime.breaker import Breakers

if TYPE_CHECKING:
    from kafka_retry.runtime._tracing import Tracing

log = logging.getLogger("kafka_retry")

#: ``async def handler(message: Message) -> None``
Handler = Callable[[Message], Awaitable[Any]]
#: One handler call: the error the handler failed with, or None.
Call = Callable[[Message], Coroutine[Any, Any, BaseException | None]]
#: One batch handler call: per message, the error it failed with (or None); None if all succeeded.
BatchCall = Callable[[list[Message]], Coroutine[Any, Any, "list[BaseException | None] | None"]]
#: The hand-off of a failure to its next tier, not yet started.
HandOff = Coroutine[Any, Any, None]


class HandlerInterrupt(BaseException):
    """Carries a handler's KeyboardInterrupt or SystemExit to :meth:`Consumer.run`.

    Raised in a task, those two escape the event loop at once, and asyncio then
    cancels every task, the Kafka clients' own included, before the consumer has
    committed and left its group: it hung until aiokafka's request timeout.
    Wrapped, they end the consumer like any other crash, after its shutdown,
    and ``Consumer.run`` raises the original.

    Attributes:
        interrupt: The KeyboardInterrupt or SystemExit.
    """

    def __init__(self, interrupt: BaseException) -> None:
        super().__init__(interrupt)
        self.interrupt = interrupt


def _timed_out(timeout: float | None, cause: BaseException) -> TimeoutError:
    """The error recorded for a call that ``handler_timeout`` cut short."""
    error = TimeoutError(f"handler timed out after {timeout}s")
    error.__cause__ = cause
    return error


class Dispatcher:
    """Runs handlers for one tier and routes their failures.

    Args:
        config: The consumer's settings.
        handlers: Handler per main topic.
        main_of: Main topic per topic this tier reads.
        attempt: The attempt number of this tier's messages (1 on the main tier).
        retry: Where retryable failures go.
        dead_letters: Where final failures go.
        clock: Time source.
        observer: Receives durations and outcomes.
        tier: The tier's name, for the observer.
        batch_handlers: Batch handler per main topic (topics not in ``handlers``).
        breakers: The consumer's circuit breakers, shared by its tiers.
        failure_log: Logs failures calmly; shared by the consumer's tiers.
    """

    def __init__(
        self,
        *,
        config: Config,
        handlers: Mapping[str, Handler],
        main_of: Mapping[str, str],
        attempt: int,
        retry: RetryBackend,
        dead_letters: DeadLetterSink,
        clock: Clock,
        observer: Observer | None = None,
        tier: str = "main",
        batch_handlers: Mapping[str, BatchHandler] | None = None,
        breakers: Breakers | None = None,
        failure_log: FailureLog | None = None,
    ) -> None:
        self._config = config
        self._batch_handlers = batch_handlers or {}
        self._breakers = breakers or Breakers(None, (), clock)
        self._failure_log = failure_log or FailureLog(
            config.log_first_failures, config.log_summary_interval, clock
        )
        self.observer: Observer = observer or NullObserver()
        self.tier = tier
        self._callers: dict[str, Call] = {}
        #: Handler calls running right now.
        self.running = 0
        self._handlers = handlers
        self._main_of = main_of
        self._attempt = attempt
        self._retry = retry
        self._dead_letters = dead_letters
        self._start = None
        if isinstance(retry, BatchedHandOffs) and retry is cast(object, dead_letters):
            self._start = retry.start
        self._clock = clock
        self._timeout = config.handler_timeout
        self._exhausted = attempt > len(config.retry_intervals)
        self._non_retryable: tuple[type[BaseException], ...] = (
            NonRetryableError,
            *config.non_retryable,
        )
        self._tracing = _tracing(config, tier, self.is_final) if config.tracing else None
        #: Keeps per-key order (main tier, ``ordered_retries``); set before the first call.
        self.key_order: KeyOrder | None = None

    @property
    def topics(self) -> list[str]:
        """The topics this tier reads."""
        return list(self._main_of)

    def message(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Any,
        timestamp: int,
    ) -> Message:
        """The Message a handler gets for a record of this tier."""
        if not headers:  # the common case, kept cheap: nothing to parse
            return plain_message(
                topic, partition, offset, key, value, timestamp, self._main_of[topic], self._attempt
            )
        original, ours = split_headers(headers)
        provenance = decode_provenance(ours) if self._attempt > 1 and ours else None
        return Message(
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            value=value,
            headers=original,
            timestamp=timestamp,
            main_topic=self._main_of[topic],
            attempt=self._attempt,
            provenance=provenance,
        )

    def messages(self, topic: str, partition: int, records: list[Any]) -> list[Message]:
        """:meth:`message` of each of one partition's records, in order, in one loop."""

        def with_headers(r: Any) -> Message:
            return self.message(topic, partition, r.offset, r.key, r.value, r.headers, r.timestamp)

        main_topic = self._main_of[topic]
        return plain_messages(records, topic, partition, main_topic, self._attempt, with_headers)

    async def run(self, message: Message) -> HandOff | None:
        """Run the handler; on failure return the (unstarted) hand-off, else None."""
        error = await self.invoke(message)
        if error is None:
            return None
        return self.route(self.failure(message, error))

    async def invoke(self, message: Message) -> BaseException | None:
        """Await the handler of ``message``; return the error it failed with, or None.

        The same as ``await self.caller(message.main_topic)(message)``.
        """
        known = self._callers.get(message.main_topic)
        if known is None:
            known = self.caller(message.main_topic)
        return await known(message)

    def caller(self, topic: str) -> Call:
        """The handler call of main topic ``topic``: the one place a handler is awaited.

        The call counts itself in :attr:`running`, times the handler, applies
        ``handler_timeout``, and returns the error the handler failed with (or
        None, after recording the success). A handler timeout is a failure.
        ``BaseException`` subclasses that are not ``Exception`` (KeyboardInterrupt,
        SystemExit) propagate: they are never swallowed as a retry. Cancellation
        of the calling task propagates too.

        Behind the topic's circuit breaker (if any), and retried in place
        ``blocking_retries`` times (if any): see :mod:`._guard`.

        Workers that handle one topic take it once and call it per message:
        what it needs is bound in advance, so the hot path looks nothing up.
        """
        known = self._callers.get(topic)
        if known is not None:
            return known
        call = self._handler_call(topic)
        breaker = self._breakers.get(topic)
        if breaker is not None:
            call = gated(call, breaker, self.retryable)
        retries = self._config.blocking_retries
        if retries:
            backoff = self._config.blocking_backoff
            call = retrying(call, retries, backoff, self.retryable, self._clock, breaker)
        if self.key_order is not None:
            # Outermost: a key held behind its retry goes to the table, not to the handler.
            call = self.key_order.wrap_call(call)
        self._callers[topic] = call
        return call

    def held_at_breaker(self, task: asyncio.Task[Any]) -> bool:
        """Whether ``task`` waits at a circuit breaker to start a handler call."""
        return self._breakers.holds(task)

    def retryable(self, error: BaseException) -> bool:
        """Whether a handler's ``error`` may be retried (in place or in a later tier)."""
        return not isinstance(error, self._non_retryable)

    def _handler_call(self, topic: str) -> Call:
        handler = self._handlers[topic]
        succeeded = self.observer.success_recorder(self.tier, topic)
        timeout = self._timeout
        failed = self.observer.handler_duration
        escalate = self.escalate
        tier = self.tier

        async def call(message: Message) -> BaseException | None:
            scope: asyncio.Timeout | None = None
            self.running += 1
            started = perf_counter()
            try:
                if timeout is None:
                    await handler(message)
                else:
                    async with asyncio.timeout(timeout) as scope:
                        await handler(message)
            except BaseException as exc:
                if scope is not None and scope.expired() and isinstance(exc, TimeoutError):
                    # Only an expired scope is our timeout; a handler's own
                    # TimeoutError (say, from its HTTP client) is reported as itself.
                    exc = _timed_out(timeout, exc)
                elif not isinstance(exc, Exception):  # the common case skips the call
                    escalate(exc)
                failed(tier, topic, perf_counter() - started)
                return exc
            finally:
                self.running -= 1
            succeeded(perf_counter() - started)
            return None

        # A span per handler call (each in-place try too), when tracing is on.
        return call if self._tracing is None else self._tracing.wrap(topic, call)

    def batch_handler(self, topic: str) -> BatchHandler | None:
        """The batch handler of main topic ``topic``, or None when it has a per-message one."""
        return self._batch_handlers.get(topic)

    def batch_caller(self, topic: str) -> BatchCall:
        """The batch handler call of main topic ``topic``: :meth:`caller` for a batch.

        The same protocol as :meth:`caller`, once per batch: the messages count
        in :attr:`running` while the call runs, ``handler_timeout`` bounds the
        whole call, and what ends the consumer propagates. It returns None when
        the handler returned, else one error per message (None for those that
        succeeded): the named ones of a :class:`BatchFailed`, or what the
        handler raised for every message. The handler gets its own copy of the
        list, so what it does to it cannot change the outcome.
        """
        handler = self._batch_handlers[topic].function
        record = self.observer.batch_recorder(self.tier, topic)
        timeout = self._timeout
        escalate = self.escalate

        async def call(messages: list[Message]) -> list[BaseException | None] | None:
            scope: asyncio.Timeout | None = None
            size = len(messages)
            self.running += size
            started = perf_counter()
            try:
                if timeout is None:
                    await handler(messages[:])
                else:
                    async with asyncio.timeout(timeout) as scope:
                        await handler(messages[:])
            except BaseException as exc:
                if scope is not None and scope.expired() and isinstance(exc, TimeoutError):
                    exc = _timed_out(timeout, exc)  # as in caller(): only our scope says so
                escalate(exc)
                errors = batch_errors(messages, exc)
                record(size, sum(error is not None for error in errors), perf_counter() - started)
                return errors
            finally:
                self.running -= size
            record(size, 0, perf_counter() - started)
            return None

        return call if self.key_order is None else self.key_order.wrap_batch(call)

    @staticmethod
    def escalate(error: BaseException) -> None:
        """Re-raise what a handler raised if it must end the consumer; return for a failure.

        Re-raised: cancellation of the calling task, and ``BaseException``
        subclasses that are not ``Exception`` (KeyboardInterrupt and SystemExit
        wrapped in :class:`HandlerInterrupt`). A handler that cancelled itself
        (say, a cancelled inner task) failed.
        """
        if isinstance(error, asyncio.CancelledError):
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise error
        elif isinstance(error, KeyboardInterrupt | SystemExit):
            raise HandlerInterrupt(error) from error
        elif not isinstance(error, Exception):
            raise error

    def main_topic_of(self, topic: str) -> str:
        """The main topic whose handler runs for records of ``topic``."""
        return self._main_of[topic]

    def failure(self, message: Message, error: BaseException) -> Failure:
        """Describe a failed attempt (and log it): final when non-retryable or exhausted."""
        error_type, error_message = describe_error(error, self._config.error_max_length)
        final = self.is_final(error)
        self.observer.handled(self.tier, message.main_topic, "dead_letter" if final else "retry")
        self._failure_log.failed(message, self.tier, error, error_type, error_message, final)
        return Failure(
            message=message,
            error_type=error_type,
            error_message=error_message,
            failed_at=int(self._clock.time() * 1000),
            group=self._config.group,
            final=final,
            span=None if self._tracing is None else self._tracing.failed_span(message),
        )

    def is_final(self, error: BaseException) -> bool:
        """Whether a handler's ``error`` sends its message to the dead letter."""
        return self._exhausted or isinstance(error, self._non_retryable)

    def route(self, failure: Failure) -> HandOff:
        """The hand-off of ``failure``: to the dead letter if final, else the next tier."""
        if self._tracing is not None:
            handoff = self._tracing.hand_off(failure, self._hand_off)
        else:
            handoff = self._hand_off(failure)
        if self.key_order is not None:
            return self.key_order.routed(failure, handoff)
        return handoff

    def hand_off(self, message: Message, error: BaseException) -> asyncio.Future[None]:
        """Describe (and log) ``message``'s failure and start its hand-off.

        The future is done once the failure is stored for sure. A backend that
        batches (:class:`~kafka_retry.retry.base.BatchedHandOffs`) takes it
        without a task of its own, a storm's hot path; with tracing or ordered
        retries, which wrap the hand-off, it runs as a task of :meth:`route`.
        """
        failure = self.failure(message, error)
        start = self._start
        if start is not None and self._tracing is None and self.key_order is None:
            return start(failure)
        return asyncio.ensure_future(self.route(failure))

    def assigned(self, topic: str, partition: int) -> None:
        """This tier took ``partition`` of ``topic`` (a new worker starts on it)."""
        if self.key_order is not None:
            self.key_order.assigned(topic, partition)

    def _hand_off(self, failure: Failure) -> HandOff:
        if failure.final:
            return self._dead_letters.dead_letter(failure)
        return self._retry.schedule(failure)


def _tracing(config: Config, tier: str, final: Callable[[BaseException], bool]) -> Tracing:
    # Imported here: it imports OpenTelemetry, which stays unloaded without tracing.
    from kafka_retry.runtime._tracing import Tracing

    return Tracing(config, tier, final)


def batch_errors(messages: list[Message], error: BaseException) -> list[BaseException | None]:
    """Per message of a batch, the error it failed with: what a batch handler raised, spread.

    A :class:`BatchFailed` fails the messages it names; one that names a
    message not in the batch is a mistake in the handler, and fails the whole
    batch with a ``ValueError`` saying so (nothing is lost, the log tells why).
    Any other error fails every message.
    """
    if not isinstance(error, BatchFailed):
        return [error] * len(messages)
    failures = error.failures
    known = set(messages)
    strangers = [m for m in failures if m not in known]
    if strangers:
        named = ", ".join(f"{m.topic}[{m.partition}]@{m.offset}" for m in strangers[:5])
        mistake = ValueError(
            f"BatchFailed names {len(strangers)} message(s) that are not in this batch: {named}"
        )
        mistake.__cause__ = error
        return [mistake] * len(messages)
    return [failures.get(message) for message in messages]
