"""Per-message counts kept as plain numbers, turned into Prometheus metrics at scrape time.

A ``prometheus_client`` counter increment and histogram observation take a
lock each, which costs about as much as dispatching the message itself. The
consumer's handlers all run on one event loop thread, so the per-message
numbers live in dicts here and :class:`EventCollector` reads them when the
registry is collected.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from itertools import accumulate

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

HANDLED = "kafka_retry_messages_handled"
HANDLED_DOC = "Messages whose attempt ended, by main topic, tier and outcome."
DURATION = "kafka_retry_handler_duration_seconds"
DURATION_DOC = "Time spent in the handler, by main topic and tier."
BATCH_SIZE = "kafka_retry_batch_size"
BATCH_SIZE_DOC = "Messages per batch handler call, by main topic and tier."
BATCH_DURATION = "kafka_retry_batch_duration_seconds"
BATCH_DURATION_DOC = "Time spent in a batch handler call, by main topic and tier."
#: Upper bounds of the batch size histogram.
SIZE_BOUNDS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0)


class _Durations:
    """One histogram series: a count per bucket (not cumulative) and the sum."""

    __slots__ = ("bounds", "counts", "failures", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        #: Failed calls; the rest of the observations are the successes.
        self.failures = 0

    @property
    def successes(self) -> int:
        """Successful calls: derived at scrape time, so the hot path does one add less."""
        return sum(self.counts) - self.failures

    def success(self, seconds: float) -> None:
        """One more successful call that took ``seconds``."""
        self.total += seconds
        self.counts[bisect_left(self.bounds, seconds)] += 1


class EventTally:
    """Handled messages per (tier, topic, outcome) and handler durations per (tier, topic).

    Written from the event loop thread only; a scrape from another thread reads
    a copy, so it may miss the message being counted right then, nothing more.

    Args:
        bounds: The histogram's finite upper bounds, ascending.
    """

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.handled: dict[tuple[str, str, str], int] = {}
        self.durations: dict[tuple[str, str], _Durations] = {}
        #: Batch handler calls: their durations and their sizes, per (tier, topic).
        self.batch_durations: dict[tuple[str, str], _Durations] = {}
        self.batch_sizes: dict[tuple[str, str], _Durations] = {}

    def count(self, tier: str, topic: str, outcome: str) -> None:
        """One more attempt of ``topic`` ended on ``tier`` with ``outcome``."""
        key = (tier, topic, outcome)
        handled = self.handled
        handled[key] = handled.get(key, 0) + 1

    def series(self, tier: str, topic: str) -> _Durations:
        """The duration series of ``topic`` on ``tier`` (created on first use)."""
        series = self.durations.get((tier, topic))
        if series is None:
            series = self.durations[tier, topic] = _Durations(self.bounds)
        return series

    def batch_recorder(self, tier: str, topic: str) -> Callable[[int, int, float], None]:
        """What to call after each batch call of ``topic`` on ``tier``: ``(size, failed, s)``."""
        key = (tier, topic)
        durations = self.batch_durations.setdefault(key, _Durations(self.bounds))
        sizes = self.batch_sizes.setdefault(key, _Durations(SIZE_BOUNDS))
        success = (tier, topic, "success")
        handled = self.handled

        def record(size: int, failed: int, seconds: float) -> None:
            durations.success(seconds)
            sizes.success(size)
            if size > failed:
                handled[success] = handled.get(success, 0) + size - failed

        return record

    def observe(self, tier: str, topic: str, seconds: float) -> None:
        """One more failed handler call of ``topic`` on ``tier`` took ``seconds``."""
        series = self.series(tier, topic)
        series.failures += 1
        series.total += seconds
        series.counts[bisect_left(self.bounds, seconds)] += 1


class EventCollector:
    """Exposes an :class:`EventTally` as a counter and a histogram (a registry collector)."""

    def __init__(self, tally: EventTally) -> None:
        self._tally = tally
        self._les = _les(tally.bounds)
        self._size_les = _les(SIZE_BOUNDS)

    def _families(
        self,
    ) -> tuple[
        CounterMetricFamily, HistogramMetricFamily, HistogramMetricFamily, HistogramMetricFamily
    ]:
        labels = ("topic", "tier")
        return (
            CounterMetricFamily(HANDLED, HANDLED_DOC, labels=("topic", "tier", "outcome")),
            HistogramMetricFamily(DURATION, DURATION_DOC, labels=labels),
            HistogramMetricFamily(BATCH_SIZE, BATCH_SIZE_DOC, labels=labels),
            HistogramMetricFamily(BATCH_DURATION, BATCH_DURATION_DOC, labels=labels),
        )

    def describe(self) -> list[Metric]:
        """The two families, without samples (for the registry's duplicate check)."""
        return list(self._families())

    def collect(self) -> list[Metric]:
        """The current counts."""
        handled, durations, batch_sizes, batch_durations = self._families()
        counts = dict(self._tally.handled)
        series_now = dict(self._tally.durations)
        for (tier, topic), series in series_now.items():
            if series.successes:
                key = (tier, topic, "success")
                counts[key] = counts.get(key, 0) + series.successes
        for (tier, topic, outcome), number in counts.items():
            handled.add_metric([topic, tier, outcome], number)
        _add_histograms(durations, series_now, self._les)
        _add_histograms(batch_sizes, dict(self._tally.batch_sizes), self._size_les)
        _add_histograms(batch_durations, dict(self._tally.batch_durations), self._les)
        return [handled, durations, batch_sizes, batch_durations]


def _les(bounds: tuple[float, ...]) -> list[str]:
    """The same ``le`` spelling as prometheus_client's own histograms ("1.0", "+Inf")."""
    les = [floatToGoString(bound) for bound in bounds]  # type: ignore[no-untyped-call]
    return [*les, "+Inf"]


def _add_histograms(
    family: HistogramMetricFamily, series_now: dict[tuple[str, str], _Durations], les: list[str]
) -> None:
    for (tier, topic), series in series_now.items():
        cumulative = list(accumulate(series.counts))
        buckets = list(zip(les, cumulative, strict=True))
        family.add_metric([topic, tier], buckets, series.total)
