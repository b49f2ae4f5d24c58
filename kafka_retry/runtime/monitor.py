"""What the consumer samples while it runs: gauges for Prometheus, and its health.

Events (outcomes, durations, rebalances) reach the metrics as they happen,
through the observer; lag, handlers in flight and retry-table rows are states,
sampled every ``Config.metrics_interval`` by :class:`GaugeSampler`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kafka_retry._clock import Clock
from kafka_retry.config import Config
from kafka_retry.runtime.state import ConsumerState
from kafka_retry.runtime.tier import KafkaTier, Tier

if TYPE_CHECKING:
    from kafka_retry.metrics import Health, Metrics, TierHealth

log = logging.getLogger("kafka_retry")

# A readiness probe must answer quickly even when the pool is busy or the host is gone.
_PING_TIMEOUT = 2.0


class GaugeSampler:
    """Sets the sampled gauges of one consumer until cancelled; then takes its share back.

    The in-flight gauge is moved by differences, so consumers that share a
    registry add up; lag series of partitions no longer held are removed.

    Args:
        metrics: Where to report.
        config: The consumer's settings (interval, group, database).
        tiers: The consumer's tiers.
        pool: The postgres backend's pool, for the retry-table rows; or None.
    """

    def __init__(
        self, metrics: Metrics, config: Config, tiers: Sequence[Tier], pool: Any = None
    ) -> None:
        self._metrics = metrics
        self._config = config
        self._tiers = tiers
        self._pool = pool
        self._in_flight: dict[str, int] = {}
        self._lag_series: set[tuple[str, str, str]] = set()
        self._failing = False

    async def run(self) -> None:
        """Refresh every ``metrics_interval`` seconds until cancelled."""
        try:
            while True:
                await self.refresh()
                await asyncio.sleep(self._config.metrics_interval)
        finally:
            self._withdraw()

    async def refresh(self) -> None:
        """Set every gauge once; a failure is logged (once while it lasts), never raised."""
        try:
            self._sample_tiers()
            if self._pool is not None:
                await self._sample_table()
        except Exception as exc:
            if not self._failing:
                log.warning("sampling metrics failed: %s: %s", type(exc).__name__, exc)
            self._failing = True
        else:
            self._failing = False

    def _sample_tiers(self) -> None:
        lag = self._metrics.lag
        seen: set[tuple[str, str, str]] = set()
        for tier in self._tiers:
            # Table pollers count their handlers too if they expose ``in_flight``.
            in_flight = getattr(tier, "in_flight", None)
            if isinstance(in_flight, int):
                self._move_in_flight(tier.name, in_flight)
            if not isinstance(tier, KafkaTier):
                continue
            for tp, behind in tier.lag().items():
                labels = (tier.name, tp.topic, str(tp.partition))
                lag.labels(*labels).set(behind)
                seen.add(labels)
        self._remove_lag(self._lag_series - seen)
        self._lag_series = seen

    def _move_in_flight(self, tier: str, now: int) -> None:
        delta = now - self._in_flight.get(tier, 0)
        if delta:
            self._metrics.in_flight.labels(tier=tier).inc(delta)
            self._in_flight[tier] = now

    async def _sample_table(self) -> None:
        from kafka_retry.retry.table import counts

        assert self._config.database is not None
        group = self._config.group
        rows = await counts(self._pool, self._config.database, group)
        pending = self._metrics.pending_rows
        for tier in range(1, len(self._config.retry_intervals) + 1):
            count = rows.pending.get(tier, 0)
            pending.labels(group=group, tier=f"retry{tier}", state="pending").set(count)
        if self._config.ordered_retries:
            # Tier 0 runs the waiting rows: those still behind their key's head, and
            # those claimed (pending at attempts 0).
            pending.labels(group=group, tier="retry0", state="waiting").set(rows.waiting)
            count = rows.pending.get(0, 0)
            pending.labels(group=group, tier="retry0", state="pending").set(count)
        self._metrics.dead_lettered_rows.labels(group=group).set(rows.dead_lettered)

    def _withdraw(self) -> None:
        for tier in list(self._in_flight):
            self._move_in_flight(tier, 0)
        self._remove_lag(self._lag_series)
        self._lag_series = set()

    def _remove_lag(self, series: set[tuple[str, str, str]]) -> None:
        for labels in series:
            # Another consumer sharing the registry may have removed it already.
            with contextlib.suppress(KeyError):
                self._metrics.lag.remove(*labels)


def tier_health(tier: Tier, task: asyncio.Task[None] | None, now: float) -> TierHealth:
    """The :class:`~kafka_retry.metrics.TierHealth` of ``tier``, run by ``task``."""
    from kafka_retry.metrics import TierHealth

    running = task is not None and not task.done()
    if not isinstance(tier, KafkaTier):
        return TierHealth(name=tier.name, running=running, ready=tier.ready.is_set())
    assignment: dict[str, list[int]] = {}
    for tp in tier.assignment:
        assignment.setdefault(tp.topic, []).append(tp.partition)
    return TierHealth(
        name=tier.name,
        running=running,
        ready=tier.ready.is_set(),
        assignment={topic: tuple(sorted(parts)) for topic, parts in sorted(assignment.items())},
        last_poll_age=None if tier.last_poll is None else max(0.0, now - tier.last_poll),
    )


async def database_reachable(pool: Any) -> bool:
    """Whether ``pool``'s database answers ``SELECT 1`` within a short bound."""
    from kafka_retry.retry.table import TRANSIENT

    try:
        async with asyncio.timeout(_PING_TIMEOUT):
            await pool.fetchval("SELECT 1")
    except TimeoutError:
        return False
    except TRANSIENT:
        return False
    return True


async def health(
    state: ConsumerState,
    tiers: Sequence[Tier],
    tasks: Mapping[str, asyncio.Task[None]],
    pool: Any,
    clock: Clock,
    stale_after: float,
) -> Health:
    """The consumer's :class:`~kafka_retry.metrics.Health`; pings the database if there is one."""
    from kafka_retry.metrics import Health

    now = clock.time()
    report = tuple(tier_health(tier, tasks.get(tier.name), now) for tier in tiers)
    checkable = pool is not None and state is not ConsumerState.STOPPED
    reachable = await database_reachable(pool) if checkable else None
    stale = any(t.last_poll_age is not None and t.last_poll_age > stale_after for t in report)
    # While stopping, tiers end one by one on purpose.
    ended = state is ConsumerState.RUNNING and any(not t.running for t in report)
    live = state is not ConsumerState.STOPPED and not stale and not ended
    ready = (
        live
        and state is ConsumerState.RUNNING
        and all(t.ready for t in report)
        and reachable is not False
    )
    return Health(state=state, tiers=report, database_reachable=reachable, live=live, ready=ready)
