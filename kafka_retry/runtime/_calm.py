"""Calm logs in a storm: the first failures in full, then one summary line per interval.

Per (main topic, error type), the first ``log_first_failures`` failures are
logged at WARNING with everything about them. Later ones are logged at DEBUG
only, and counted; once per ``log_summary_interval`` a WARNING line says how
many there were and gives the latest error text. A storm of a million failures
then writes a handful of lines a minute, and DEBUG still has every one. An
interval without failures ends the storm: the next failure is logged in full.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import attrs

__all__ = ["FailureLog"]

log = logging.getLogger("kafka_retry")


@attrs.define
class _Quiet:
    """The failures of one (topic, error type) not logged in full since the last summary."""

    seen: int = 0
    count: int = 0
    tiers: set[str] = attrs.field(factory=set)
    latest: str = ""
    timer: asyncio.TimerHandle | None = None


class FailureLog:
    """Logs handler failures, calmly; one per consumer, shared by its tiers.

    Args:
        first: Failures per (topic, error type) logged in full.
        interval: Seconds between two summary lines of one (topic, error type).
    """

    def __init__(self, first: int, interval: float) -> None:
        self._first = first
        self._interval = interval
        self._quiet: dict[tuple[str, str], _Quiet] = {}

    def failed(self, text: str, args: tuple[Any, ...], extra: dict[str, Any]) -> None:
        """Log one failure: ``text % args``, with ``extra`` fields on the record.

        ``extra`` must hold ``main_topic``, ``error_type``, ``error_message`` and ``tier``.
        """
        key = (extra["main_topic"], extra["error_type"])
        quiet = self._quiet.get(key)
        if quiet is None:
            quiet = self._quiet[key] = _Quiet()
        quiet.seen += 1
        if quiet.seen <= self._first:
            log.warning(text, *args, extra=extra)
            return
        log.debug(text, *args, extra=extra)
        quiet.count += 1
        quiet.tiers.add(extra["tier"])
        quiet.latest = extra["error_message"]
        if quiet.timer is None:
            loop = asyncio.get_running_loop()
            quiet.timer = loop.call_later(self._interval, self._summarise, key)

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
        loop = asyncio.get_running_loop()
        quiet.timer = loop.call_later(self._interval, self._summarise, key)

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
