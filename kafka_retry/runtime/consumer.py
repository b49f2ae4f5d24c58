"""The :class:`Consumer`: lifecycle, handler registry, and the tiers it runs."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable, Mapping
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from kafka_retry import _kafka
from kafka_retry._batch import (
    DEFAULT_MAX_SIZE,
    DEFAULT_MAX_WAIT,
    BatchHandler,
    batch_handler,
)
from kafka_retry._batch import batch_handlers as _batch_handlers
from kafka_retry._clock import Clock, SystemClock
from kafka_retry._decoding import Decoder
from kafka_retry._kafka import AIOKafkaTransport, KafkaTransport
from kafka_retry._observe import NullObserver, Observer
from kafka_retry._typed import AnyHandler, adapt_handler, adapt_handlers
from kafka_retry.config import Config
from kafka_retry.errors import ConsumerStateError, SetupError
from kafka_retry.retry.base import Backend
from kafka_retry.retry.kafka import KafkaBackend
from kafka_retry.runtime import _lenient
from kafka_retry.runtime._calm import FailureLog
from kafka_retry.runtime._gc import GcTuning
from kafka_retry.runtime.breaker import Breakers
from kafka_retry.runtime.builder import TierBuilder
from kafka_retry.runtime.dispatch import Handler, HandlerInterrupt
from kafka_retry.runtime.state import ConsumerState
from kafka_retry.runtime.tier import Tier

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from kafka_retry.metrics import Health, Metrics
    from kafka_retry.retry.table import RetryRows

__all__ = ["Consumer", "ConsumerState"]

log = logging.getLogger("kafka_retry")

H = TypeVar("H", bound=AnyHandler)
B = TypeVar("B", bound=Callable[..., Any])


class Consumer:
    """Consumes the configured topics and moves failures through the retry tiers.

    Args:
        config: The settings.
        handlers: Handler per main topic; or register them with :meth:`handler`.
            Each signature is read here: see :meth:`handler`.
        batch_handlers: Batch handler per main topic, with the default limits
            (500 messages, 0.05 s); or register them with :meth:`batch_handler`.
        clock: Time source (the in-memory test mode passes a virtual clock).
        transport: Makes the Kafka clients (the in-memory test mode passes its broker).
        observer: Receives what happens; by default the Prometheus metrics of
            ``registry`` do (nothing does with ``Config(metrics=False)``).
        registry: Where the metrics live (default: prometheus_client's global
            registry); they are created once per registry and shared by its consumers.
        retry_table: Where the postgres retry backend keeps its rows (the
            in-memory test mode passes a table in memory); default: the table
            of ``config.database``.

    Use ``await consumer.run()`` (until :meth:`stop` or cancellation), or
    ``async with consumer:`` to run it in the background of a block.

    Raises:
        SetupError: A handler's signature has no usable shape or payload type,
            a topic has both a handler and a batch handler, or a batch handler
            is given with an ``ordering`` other than ``"partition"``.
    """

    def __init__(
        self,
        config: Config,
        handlers: Mapping[str, AnyHandler] | None = None,
        *,
        batch_handlers: Mapping[str, Callable[..., Any] | BatchHandler] | None = None,
        clock: Clock | None = None,
        transport: KafkaTransport | None = None,
        observer: Observer | None = None,
        registry: CollectorRegistry | None = None,
        retry_table: RetryRows | None = None,
    ) -> None:
        self.config = config
        self._handlers: dict[str, Handler] = adapt_handlers(handlers or {}, config.decoder)
        self._batch_handlers: dict[str, BatchHandler] = {}
        for topic, spec in _batch_handlers(batch_handlers or {}).items():
            self._add_batch_handler(topic, spec)
        self._clock: Clock = clock or SystemClock()
        self._transport: KafkaTransport = transport or AIOKafkaTransport()
        self._retry_table = retry_table
        self._metrics: Metrics | None = None
        if config.metrics:
            from kafka_retry.metrics import Metrics, PrometheusObserver

            self._metrics = Metrics.for_registry(registry)
            observer = observer or PrometheusObserver(self._metrics)
        self._observer: Observer = observer or NullObserver()
        listener = None if self._metrics is None else self._metrics.circuit_changed
        self._breakers = Breakers(config.circuit_breaker, config.topics, self._clock, listener)
        self._pool: Any = None  # the postgres backend's, for health and gauges
        self._tier_tasks: dict[str, asyncio.Task[None]] = {}
        self._state = ConsumerState.NEW
        self._stop_requested = asyncio.Event()
        self._ready = asyncio.Event()
        self._done = asyncio.Event()
        self._tiers: list[Tier] = []
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        # ``async with``: the block's task, cancelled if the consumer dies under it.
        self._host: asyncio.Task[Any] | None = None
        self._cancelled_host = False
        self._exiting = False
        self._gc = GcTuning()

    def __repr__(self) -> str:
        return f"<kafka_retry.Consumer group={self.config.group!r} state={self._state.value}>"

    @property
    def state(self) -> ConsumerState:
        """The current :class:`ConsumerState`."""
        return self._state

    @property
    def handlers(self) -> Mapping[str, Handler]:
        """What runs for each main topic, read-only: each handler as given or registered.

        A handler that takes a payload appears as the ``Message`` handler that
        decodes it and calls it (its ``function`` attribute is the handler).
        """
        return MappingProxyType(self._handlers)

    def handler(self, topic: str, *, decoder: Decoder | None = None) -> Callable[[H], H]:
        """Register the decorated async function as ``topic``'s handler; return it unchanged.

        It takes the ``Message``, or a payload (decoded from the value) and
        optionally a parameter annotated ``Message``.

        Args:
            topic: The main topic.
            decoder: Decodes this handler's payload instead of ``config.decoder``.

        Raises:
            SetupError: The signature has no usable shape or payload type; names the handler.
            ConsumerStateError: The consumer has started.
        """

        def register(function: H) -> H:
            if self._state is not ConsumerState.NEW:
                raise ConsumerStateError("handlers can only be added before the consumer starts")
            if topic in self._batch_handlers:
                raise SetupError(
                    f"topic {topic!r} has a batch handler already; a topic has a handler "
                    "or a batch handler, not both"
                )
            chosen = decoder or self.config.decoder
            self._handlers[topic] = adapt_handler(
                function, topic, chosen, explicit=decoder is not None
            )
            return function

        return register

    @property
    def batch_handlers(self) -> Mapping[str, BatchHandler]:
        """The batch handler of each topic that has one, with its limits, read-only."""
        return MappingProxyType(self._batch_handlers)

    def batch_handler(
        self, topic: str, *, max_size: int = DEFAULT_MAX_SIZE, max_wait: float = DEFAULT_MAX_WAIT
    ) -> Callable[[B], B]:
        """Register the decorated function as ``topic``'s batch handler; return it unchanged.

        It is ``async def h(messages: list[Message]) -> None`` and gets records
        of one partition, in offset order: up to ``max_size`` of them, taken
        within ``max_wait`` seconds of the first. Returning means every message
        succeeded; raising :class:`~kafka_retry.BatchFailed` fails the ones it
        names; any other exception fails them all. Each failed message goes on
        to its next tier on its own.

        Args:
            topic: The main topic.
            max_size: The most messages one call gets (>= 1).
            max_wait: Seconds a batch waits for more after its first message (>= 0).

        Raises:
            ConfigError: ``max_size`` or ``max_wait`` is out of range (named).
            SetupError: The function is not async or does not take a list of
                Messages, the topic has a per-message handler, or
                ``config.ordering`` is not ``"partition"``.
            ConsumerStateError: The consumer has started.
        """

        def register(function: B) -> B:
            if self._state is not ConsumerState.NEW:
                raise ConsumerStateError("handlers can only be added before the consumer starts")
            self._add_batch_handler(topic, batch_handler(function, topic, max_size, max_wait))
            return function

        return register

    def _add_batch_handler(self, topic: str, spec: BatchHandler) -> None:
        if topic in self._handlers:
            raise SetupError(
                f"topic {topic!r} has a handler already; a topic has a handler or a "
                "batch handler, not both"
            )
        ordering = self.config.ordering
        if ordering != "partition":
            raise SetupError(
                f"batch handler for topic {topic!r}: batch handlers need "
                f"ordering='partition' (config.ordering is {ordering!r})"
            )
        self._batch_handlers[topic] = spec

    def _check_handlers(self) -> None:
        topics = set(self.config.topics)
        both = sorted(set(self._handlers) & set(self._batch_handlers))
        if both:
            raise SetupError(
                f"topic(s) {', '.join(both)} have a handler and a batch handler; one of them only"
            )
        unknown = sorted((set(self._handlers) | set(self._batch_handlers)) - topics)
        if unknown:
            raise SetupError(
                f"handler for unknown topic(s) {', '.join(unknown)}; "
                f"configured topics: {', '.join(self.config.topics)}"
            )
        missing = [
            t
            for t in self.config.topics
            if t not in self._handlers and t not in self._batch_handlers
        ]
        if missing:
            raise SetupError(f"no handler for topic(s) {', '.join(missing)}")
        for topic, function in self._handlers.items():
            call = getattr(function, "__call__", None)  # noqa: B004 - async callables count too
            if not (inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(call)):
                raise SetupError(f"handler for {topic!r} must be an async function")

    async def run(self) -> None:
        """Run until :meth:`stop` or cancellation; then drain, commit and close.

        Raises:
            ConsumerStateError: The consumer was started before.
            SetupError: Handlers do not match the topics, or a main topic is missing.
            ServiceUnavailableError: Kafka stayed unreachable for every startup attempt.
        """
        if self._state is not ConsumerState.NEW:
            raise ConsumerStateError(f"cannot start a {self._state.value} consumer")
        self._state = ConsumerState.STARTING
        try:
            self._check_handlers()
            await self._run()
        except HandlerInterrupt as exc:
            self._error = exc.interrupt
            raise exc.interrupt from None  # shut down cleanly: now end as the handler did
        except BaseException as exc:
            self._error = exc
            raise
        finally:
            self._state = ConsumerState.STOPPED
            self._done.set()

    async def _run(self) -> None:
        config = self.config
        if config.lenient_header_names:
            _lenient.install()
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(self._gc.release)
            admin = await _kafka.start_admin(config, self._transport)
            stack.push_async_callback(admin.close)
            if config.create_topics:
                await _kafka.ensure_topics(admin, config)
            else:
                await _kafka.check_topics(admin, config)
            producer = None
            if not config.exactly_once:
                # With exactly_once each tier hands off on its own transactional producer.
                producer = await _kafka.start_producer(config, self._transport)
                stack.push_async_callback(producer.stop)
            failure_log = FailureLog(
                config.log_first_failures, config.log_summary_interval, self._clock
            )
            stack.callback(failure_log.flush)
            stack.callback(self._breakers.stop)
            builder = TierBuilder(
                config=config,
                handlers=self._handlers,
                clock=self._clock,
                observer=self._observer,
                transport=self._transport,
                producer=producer,
                stack=stack,
                batch_handlers=self._batch_handlers,
                breakers=self._breakers,
                failure_log=failure_log,
            )
            self._tiers = await self._build_tiers(builder)
            if self._stop_requested.is_set():
                return
            await self._supervise(self._tiers)

    async def _build_tiers(self, builder: TierBuilder) -> list[Tier]:
        """The main tier and the backend's retry tiers, every one started."""
        config = self.config
        parts = await self._backend().open(builder)
        self._pool = parts.pool
        main_of = {topic: topic for topic in config.topics}
        dispatcher = builder.dispatcher("main", main_of, 1, parts.retry, parts.dead_letters)
        dispatcher.key_order = parts.key_order
        main = await builder.kafka_tier(config.group, dispatcher, None)
        return [main, *parts.tiers]

    def _backend(self) -> Backend:
        if self.config.retry_backend == "postgres":
            from kafka_retry.retry.postgres import PostgresBackend

            return PostgresBackend(self._retry_table)
        return KafkaBackend()

    async def _supervise(self, tiers: list[Tier]) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                for tier in tiers:
                    task = group.create_task(tier.run(), name=f"kafka-retry:{tier.name}")
                    self._tier_tasks[tier.name] = task
                watcher = group.create_task(self._watch_ready(tiers))
                sampler = self._start_sampler(group, tiers)
                await self._stop_requested.wait()
                self._state = ConsumerState.STOPPING
                # A tier still waiting for its first assignment never gets ready
                # now: waiting for it would hold the stop until a rebalance ends.
                watcher.cancel()
                if sampler is not None:
                    sampler.cancel()
                for tier in tiers:
                    tier.request_stop()
                # Calls waiting for a breaker to close would hold the drain: their
                # records are not done, so they are simply redelivered.
                self._breakers.cancel_waiting()
        except BaseExceptionGroup as group_error:
            # One tier crashed (or several); surface the first as itself.
            raise group_error.exceptions[0] from group_error

    def _start_sampler(
        self, group: asyncio.TaskGroup, tiers: list[Tier]
    ) -> asyncio.Task[None] | None:
        if self._metrics is None:
            return None
        from kafka_retry.runtime.monitor import GaugeSampler

        sampler = GaugeSampler(self._metrics, self.config, tiers, self._pool)
        return group.create_task(sampler.run(), name="kafka-retry:metrics")

    async def health(self, stale_after: float | None = None) -> Health:
        """A snapshot for liveness and readiness probes; pings the database if there is one.

        Args:
            stale_after: Seconds after which a Kafka tier's last poll makes the
                consumer not live; default: twice the rebalance timeout (a
                rebalance may hold the poll that long).
        """
        from kafka_retry.runtime.monitor import health

        if stale_after is None:
            stale_after = 2 * self.config.effective_rebalance_timeout_ms / 1000
        report = await health(
            self._state, self._tiers, self._tier_tasks, self._pool, self._clock, stale_after
        )
        return attrs.evolve(report, circuit_breakers=self._breakers.states())

    async def _watch_ready(self, tiers: list[Tier]) -> None:
        await asyncio.gather(*(tier.ready.wait() for tier in tiers))
        if self._state is ConsumerState.STARTING:
            self._state = ConsumerState.RUNNING
        if self.config.tune_gc:
            self._gc.apply()  # now: what startup made is what it freezes
        self._ready.set()
        log.info("consumer %s ready: %d tier(s)", self.config.group, len(tiers))

    async def wait_ready(self) -> None:
        """Return once every tier has joined its group and got its assignment.

        Raises:
            Exception: The error that ended the consumer before it was ready.
            ConsumerStateError: It stopped before it was ready.
        """
        ready = asyncio.ensure_future(self._ready.wait())
        done = asyncio.ensure_future(self._done.wait())
        try:
            await asyncio.wait({ready, done}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            done.cancel()
        if self._ready.is_set():
            return
        if self._error is not None:
            raise self._error
        raise ConsumerStateError("the consumer stopped before it was ready")

    def request_stop(self) -> None:
        """Ask the consumer to stop, without waiting (safe to call from a handler)."""
        self._stop_requested.set()

    async def stop(self) -> None:
        """Stop fetching, drain in-flight handlers (``drain_timeout``), commit, close.

        Idempotent; a consumer that never started just becomes stopped.
        """
        if self._state is ConsumerState.NEW:
            self._state = ConsumerState.STOPPED
            self._done.set()
            return
        self._stop_requested.set()
        await self._done.wait()

    async def __aenter__(self) -> Consumer:
        """Start the consumer in the background; return once it is ready.

        If the consumer ends with an error while the block runs (a tier
        crashed, a handler interrupt), the block is cancelled and the ``async
        with`` raises that error, as a task group does.
        """
        if self._state is not ConsumerState.NEW:
            raise ConsumerStateError(f"cannot start a {self._state.value} consumer")
        self._task = asyncio.create_task(self._background(), name="kafka-retry:consumer")
        try:
            await self.wait_ready()
        except BaseException:
            await self._finish(surface=False)
            raise
        self._host = asyncio.current_task()
        self._task.add_done_callback(self._ended_early)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exiting = True
        try:
            await self._finish()
        finally:
            if self._cancelled_host:
                self._cancelled_host = False
                host = asyncio.current_task()
                if host is not None:
                    host.uncancel()  # our cancellation ends here, not the caller's

    async def _background(self) -> None:
        try:
            await self.run()
        except asyncio.CancelledError:
            raise
        except BaseException:
            # Kept in self._error: __aexit__ raises it in the block's task. Raised
            # here, KeyboardInterrupt and SystemExit would escape the event loop.
            return

    def _ended_early(self, task: asyncio.Task[None]) -> None:
        error = self._error
        if self._exiting or error is None or isinstance(error, asyncio.CancelledError):
            return
        if self._host is not None and not self._host.done():
            self._cancelled_host = True
            self._host.cancel(f"the consumer ended: {type(error).__name__}")

    async def _finish(self, *, surface: bool = True) -> None:
        self._stop_requested.set()
        task = self._task
        if task is None:
            return
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise
        error = self._error
        if surface and error is not None and not isinstance(error, asyncio.CancelledError):
            raise error
