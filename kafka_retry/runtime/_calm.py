"""Calm logs in a storm: the first failures in full, then one summary line per interval.

Per (main topic, error type), the first ``log_first_failures`` failures are
logged at WARNING with everything about them. Later ones are logged at DEBUG
only, and counted; once per ``log_summary_interval`` a WARNING line says how
many there were and gives the latest error text. A storm of a million failures
then writes a handful of lines a minute, and DEBUG still has every one. An
interval without failures ends the storm: the next failure is logged in full.
"""

from __future__ import annotations

import logging
from functools import partial

import attrs

from kafka_retry._clock import Cancellable, Clock, SystemClock
from kafka_retry.message import Message

__all__ = ["FailureLog"]

log = logging.getLogger("kafka_retry")


@attrs.define
class _Quiet:
    """The failures of one (topic, error type) not logged in full since the last summary."""

    seen: int = 0
    count: int = 0
    tiers: set[str] = attrs.field(factory=set)
    latest: str = ""
    timer: Cancellable | None = None


class FailureLog:
    """Logs handler failures, calmly; one per consumer, shared by its tiers.

    Args:
        first: Failures per (topic, error type) logged in full.
        interval: Seconds between two summary lines of one (topic, error type).
        clock: Runs the summary timers (the consumer's clock).
    """

    def __init__(self, first: int, interval: float, clock: Clock | None = None) -> None:
        self._first = first
        self._interval = interval
        self._clock: Clock = clock or SystemClock()
        self._quiet: dict[tuple[str, str], _Quiet] = {}

    def failed(
        self,
        message: Message,
        tier: str,
        error: BaseException,
        error_type: str,
        error_message: str,
        final: bool,
    ) -> None:
        """Log the failure of ``message`` in ``tier``: in full, or counted for the next summary.

        In full is with the traceback of ``error``; the DEBUG line of a later
        failure is one line, and costs its formatting only when DEBUG is on.
        """
        key = (message.main_topic, error_type)
        quiet = self._quiet.get(key)
        if quiet is None:
            quiet = self._quiet[key] = _Quiet()
        quiet.seen += 1
        if quiet.seen <= self._first:
            _log_failure(logging.WARNING, message, tier, error_type, error_message, final, error)
            return
        if log.isEnabledFor(logging.DEBUG):
            _log_failure(logging.DEBUG, message, tier, error_type, error_message, final)
        quiet.count += 1
        quiet.tiers.add(tier)
        quiet.latest = error_message
        if quiet.timer is None:
            quiet.timer = self._clock.call_later(self._interval, partial(self._summarise, key))

    def _summarise(self, key: tuple[str, str]) -> None:
        quiet = self._quiet[key]
        quiet.timer = None
        if not quiet.count:
            # A quiet interval: the storm is over, the next failure is news again.
            del self._quiet[key]
            return
        topic, error_type = key
        log.warning(
            "%d more handler failures for %s (%s) in the last %gs, tiers %s; latest: %s",
            quiet.count,
            topic,
            error_type,
            self._interval,
            ", ".join(sorted(quiet.tiers)),
            quiet.latest,
            extra={
                "main_topic": topic,
                "error_type": error_type,
                "failures": quiet.count,
                "summary": True,
            },
        )
        quiet.count = 0
        quiet.tiers.clear()
        quiet.timer = self._clock.call_later(self._interval, partial(self._summarise, key))

    def flush(self) -> None:
        """Write the pending summaries now (the consumer is stopping)."""
        for key, quiet in list(self._quiet.items()):
            if quiet.timer is not None:
                quiet.timer.cancel()
            self._summarise(key)
            after = self._quiet.get(key)
            if after is not None and after.timer is not None:
                after.timer.cancel()
                after.timer = None


def _log_failure(
    level: int,
    message: Message,
    tier: str,
    error_type: str,
    error_message: str,
    final: bool,
    error: BaseException | None = None,
) -> None:
    log.log(
        level,
        "handler failed for %s[%d]@%d attempt %d: %s: %s -> %s",
        message.topic,
        message.partition,
        message.offset,
        message.attempt,
        error_type,
        error_message,
        "dead letter" if final else f"retry {message.attempt}",
        exc_info=error,
        extra={
            "topic": message.topic,
            "partition": message.partition,
            "offset": message.offset,
            "attempt": message.attempt,
            "tier": tier,
            "main_topic": message.main_topic,
            "error_type": error_type,
            "error_message": error_message,
        },
    )
