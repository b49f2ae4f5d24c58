"""Prometheus metrics, their serving, and the consumer's health record.

Every metric is created once per :class:`~prometheus_client.CollectorRegistry`
(by :meth:`Metrics.for_registry`), with bounded label sets: main topic, tier,
outcome; the lag gauge adds the partition of the tier's own topic, the
retry-table gauges the consumer group. A :class:`~kafka_retry.Consumer`
reports to the default registry unless it is given another one, or
``Config(metrics=False)`` turns metrics off.

Serve them with :func:`serve` (prometheus-async's aiohttp server) or mount
:func:`asgi_app` in an ASGI application such as FastAPI.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import threading
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any

import attrs
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
from prometheus_client import make_asgi_app as _make_asgi_app
from prometheus_client.exposition import choose_encoder

from kafka_retry._events import EventCollector, EventTally
from kafka_retry._observe import Outcome
from kafka_retry.config import Config
from kafka_retry.errors import ConfigError
from kafka_retry.runtime.state import ConsumerState

__all__ = [
    "GO_DEAD_LETTERED_GAUGE",
    "Health",
    "Metrics",
    "MetricsServer",
    "PrometheusObserver",
    "TierHealth",
    "asgi_app",
    "observe_dead_lettered_count",
    "serve",
]

log = logging.getLogger("kafka_retry")

#: The gauge name of the Go module, kept for dashboards that migrate.
GO_DEAD_LETTERED_GAUGE = "kafka_consumer_dead_lettered_count"

# Handlers range from sub-millisecond lookups to calls that time out after minutes.
_DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip

_created: weakref.WeakKeyDictionary[CollectorRegistry, Metrics] = weakref.WeakKeyDictionary()
_created_lock = threading.Lock()


@attrs.frozen
class Metrics:
    """The metric families of kafka-retry in one registry; see ``docs/advanced/prometheus.md``.

    Get them with :meth:`for_registry`: constructing them twice in one registry
    would register duplicate names. ``events`` holds the per-message counter
    and histogram (``kafka_retry_messages_handled_total``,
    ``kafka_retry_handler_duration_seconds``) and the batch handlers' histograms
    (``kafka_retry_batch_size``, ``kafka_retry_batch_duration_seconds``) as
    plain numbers, read at scrape time.
    """

    events: EventTally
    in_flight: Gauge
    forward_failures: Counter
    commit_failures: Counter
    rebalances: Counter
    lag: Gauge
    pending_rows: Gauge
    dead_lettered_rows: Gauge
    go_dead_lettered: Gauge
    circuit_state: Gauge

    @classmethod
    def for_registry(cls, registry: CollectorRegistry | None = None) -> Metrics:
        """The metrics of ``registry`` (default: the global one), created on first use."""
        registry = REGISTRY if registry is None else registry
        with _created_lock:
            metrics = _created.get(registry)
            if metrics is None:
                metrics = _created[registry] = cls._create(registry)
            return metrics

    @classmethod
    def _create(cls, registry: CollectorRegistry) -> Metrics:
        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, labels, registry=registry)

        events = EventTally(_DURATION_BUCKETS)
        registry.register(EventCollector(events))
        return cls(
            events=events,
            in_flight=gauge(
                "kafka_retry_handlers_in_flight", "Handler calls running now.", ("tier",)
            ),
            forward_failures=counter(
                "kafka_retry_forward_failures",
                "Failed attempts to hand a failure to its next topic or the retry table.",
                ("topic", "error_type"),
            ),
            commit_failures=counter(
                "kafka_retry_commit_failures", "Offset commits that failed.", ("tier",)
            ),
            rebalances=counter(
                "kafka_retry_rebalances", "Partition assignments received.", ("tier",)
            ),
            lag=gauge(
                "kafka_retry_consumer_lag",
                "Records not yet done per partition: high-water mark minus done position.",
                ("tier", "topic", "partition"),
            ),
            pending_rows=gauge(
                "kafka_retry_pending_rows",
                "Retry-table rows waiting for a tier, by consumer group and state"
                " (pending; waiting: behind an earlier row of their key, tier retry0).",
                ("group", "tier", "state"),
            ),
            dead_lettered_rows=gauge(
                "kafka_retry_dead_lettered_rows",
                "Dead-lettered retry-table rows, by consumer group.",
                ("group",),
            ),
            go_dead_lettered=gauge(
                GO_DEAD_LETTERED_GAUGE,
                "Dead-lettered messages in the database (the Go module's name).",
                ("group",),
            ),
            circuit_state=gauge(
                "kafka_retry_circuit_state",
                "Circuit breaker per main topic: 0 closed, 1 open, 2 half-open.",
                ("topic",),
            ),
        )

    def circuit_changed(self, topic: str, state: int) -> None:
        """Set the breaker gauge of main topic ``topic``."""
        self.circuit_state.labels(topic=topic).set(int(state))


class PrometheusObserver:
    """Reports the runtime's events to :class:`Metrics`; the consumer's default observer.

    Per-message events only update plain numbers (about a microsecond per
    message); the rare ones go to ordinary prometheus_client counters.
    """

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._metrics = metrics if metrics is not None else Metrics.for_registry()
        self._events = self._metrics.events

    def success_recorder(self, tier: str, topic: str) -> Callable[[float], None]:
        """The series' own method: no lookup and no extra call layer per message."""
        return self._events.series(tier, topic).success

    def batch_recorder(self, tier: str, topic: str) -> Callable[[int, int, float], None]:
        """Counts the batch's successes and observes its size and duration."""
        return self._events.batch_recorder(tier, topic)

    def handler_duration(self, tier: str, topic: str, seconds: float) -> None:
        """Observe one failed handler call."""
        self._events.observe(tier, topic, seconds)

    def handled(self, tier: str, topic: str, outcome: Outcome) -> None:
        """Count one ended attempt."""
        self._events.count(tier, topic, outcome)

    def forward_failed(self, topic: str, error_type: str) -> None:
        """Count one failed hand-off (rare: not cached)."""
        self._metrics.forward_failures.labels(topic=topic, error_type=error_type).inc()

    def commit_failed(self, tier: str) -> None:
        """Count one failed commit."""
        self._metrics.commit_failures.labels(tier=tier).inc()

    def rebalanced(self, tier: str) -> None:
        """Count one assignment."""
        self._metrics.rebalances.labels(tier=tier).inc()


def asgi_app(registry: CollectorRegistry | None = None) -> Any:
    """An ASGI application that serves ``registry`` (default: the global one).

    Mount it, e.g. ``app.mount("/metrics", asgi_app())`` in FastAPI.
    """
    return _make_asgi_app(REGISTRY if registry is None else registry)


@attrs.define
class MetricsServer:
    """A running metrics HTTP server; close it with :meth:`aclose` or ``async with``."""

    url: str
    port: int
    _close: Any = attrs.field(repr=False)
    _closed: bool = attrs.field(default=False, init=False, repr=False)

    async def aclose(self) -> None:
        """Stop serving; idempotent."""
        if not self._closed:
            self._closed = True
            await self._close()

    async def __aenter__(self) -> MetricsServer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def serve(
    port: int, *, addr: str = "", registry: CollectorRegistry | None = None
) -> MetricsServer:
    """Serve ``registry`` over HTTP at ``/metrics`` on ``addr:port`` (all interfaces by default).

    The global registry is served by prometheus-async's server; another
    registry by an equivalent aiohttp application. ``port=0`` picks a free port
    (see :attr:`MetricsServer.port`).

    Raises:
        ImportError: aiohttp is not installed (``pip install 'kafka-retry[server]'``).
        OSError: The port cannot be bound.
    """
    if importlib.util.find_spec("aiohttp") is None:
        raise ImportError("serve() needs aiohttp: pip install 'kafka-retry[server]'")
    if registry is None or registry is REGISTRY:
        from prometheus_async.aio.web import start_http_server

        server = await start_http_server(addr=addr, port=port)
        url = f"{server.url}metrics"
        return MetricsServer(url=url, port=server.socket.port, close=server.close)
    return await _serve_registry(registry, addr, port)


async def _serve_registry(registry: CollectorRegistry, addr: str, port: int) -> MetricsServer:
    from aiohttp import web

    async def metrics(request: web.Request) -> web.Response:
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        response = web.Response(body=encode(registry))
        response.headers["Content-Type"] = content_type
        return response

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, addr or None, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    host, bound = runner.addresses[0][:2]
    host = f"[{host}]" if ":" in host else host
    return MetricsServer(url=f"http://{host}:{bound}/metrics", port=bound, close=runner.cleanup)


async def observe_dead_lettered_count(
    config: Config, interval: float = 30.0, *, registry: CollectorRegistry | None = None
) -> None:
    """Count the group's dead-lettered rows every ``interval`` seconds, until cancelled.

    The Python form of the Go module's ``ObserveDeadLetteredCount(ctx, cfg,
    interval)``: sets ``kafka_consumer_dead_lettered_count`` (and
    ``kafka_retry_dead_lettered_rows``). Run it as a task next to the consumer.
    A failed count is logged and tried again at the next interval.

    Raises:
        ConfigError: ``config`` has no database settings, or ``interval`` is not > 0.
        ServiceUnavailableError: PostgreSQL stayed unreachable at the start.
    """
    from kafka_retry.retry.table import TRANSIENT, close_pool, dead_lettered_count, open_pool

    database = config.database
    if database is None:
        raise ConfigError("database", "counting dead letters needs database settings")
    if not interval > 0:
        raise ConfigError("interval", f"must be > 0, got {interval!r}")
    metrics = Metrics.for_registry(registry)
    pool = await open_pool(
        database, attempts=config.connect_attempts, interval=config.connect_interval, max_size=1
    )
    try:
        while True:
            try:
                count = await dead_lettered_count(pool, database, config.group)
            except TRANSIENT as exc:
                log.warning("counting dead letters failed: %s: %s", type(exc).__name__, exc)
            else:
                metrics.go_dead_lettered.labels(group=config.group).set(count)
                metrics.dead_lettered_rows.labels(group=config.group).set(count)
            await asyncio.sleep(interval)
    finally:
        await close_pool(pool)


@attrs.frozen
class TierHealth:
    """How one tier is doing.

    Attributes:
        name: ``"main"``, ``"retryN"`` or ``"maintenance"``.
        running: Its task has not ended.
        ready: It holds its share of the work (joined its group, or started polling its table).
        assignment: Partitions held, per topic (Kafka tiers; empty for table pollers).
        last_poll_age: Seconds since its last completed Kafka poll; None before the
            first one, and for tiers that do not poll Kafka.
    """

    name: str
    running: bool
    ready: bool
    assignment: dict[str, tuple[int, ...]] = attrs.field(factory=dict)
    last_poll_age: float | None = None


@attrs.frozen
class Health:
    """A snapshot for liveness and readiness probes, from :meth:`Consumer.health`.

    Attributes:
        state: Where the consumer is in its life.
        tiers: One entry per tier (empty before the tiers started).
        database_reachable: Whether the retry table's database answered; None
            without a database, and once the consumer stopped.
        live: Not stopped, no tier ended early, no Kafka poll older than the bound.
        ready: Live, running, every tier ready, and the database (if any) reachable.
        circuit_breakers: The state of each main topic's circuit breaker
            (``closed``, ``open``, ``half_open``); empty when the breaker is off.
            An open breaker leaves the consumer live and ready: it is waiting on
            purpose.
    """

    state: ConsumerState
    tiers: tuple[TierHealth, ...]
    database_reachable: bool | None
    live: bool
    ready: bool
    circuit_breakers: dict[str, str] = attrs.field(factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the state as its value, tiers as a list)."""
        return {
            "state": self.state.value,
            "live": self.live,
            "ready": self.ready,
            "database_reachable": self.database_reachable,
            "tiers": [attrs.asdict(tier) for tier in self.tiers],
            "circuit_breakers": dict(self.circuit_breakers),
        }
