"""What the demo shows: a live view on a terminal, plain lines elsewhere, the summary."""

from __future__ import annotations

import time
from typing import IO

from kafka_retry._cli._demo_app import Snapshot
from kafka_retry._cli._output import bar, table

_PLAIN_EVERY = 1.0


def tier_rows(snapshot: Snapshot) -> list[list[str]]:
    """One row per tier: name, handled, retrying (sent on to a retry tier), dead-lettered."""
    rows = []
    for tier in snapshot.tiers:
        counts = snapshot.counts[tier]
        rows.append(
            [tier, str(counts["success"]), str(counts["retry"]), str(counts["dead_letter"])]
        )
    return rows


def tier_table(snapshot: Snapshot, *, total: bool = False) -> list[str]:
    """The per-tier table (with a total row)."""
    rows = tier_rows(snapshot)
    if total:
        retried = str(snapshot.total("retry"))
        rows.append(["total", str(snapshot.handled), retried, str(snapshot.dead_lettered)])
    headers = ["TIER", "HANDLED", "RETRYING", "DEAD-LETTERED"]
    return table(headers, rows, right=[1, 2, 3])


def live_lines(snapshot: Snapshot, orders: int, elapsed: float) -> list[str]:
    """The live view: a progress bar over settled orders, then the tier table."""
    head = bar("orders", snapshot.settled, orders)
    return [
        f"{head}  settled  {elapsed:4.1f}s",
        f"produced {snapshot.produced}  handled {snapshot.handled}  "
        f"waiting in retry tiers {snapshot.waiting}  dead-lettered {snapshot.dead_lettered}",
        "",
        *tier_table(snapshot),
    ]


def plain_line(snapshot: Snapshot, orders: int, elapsed: float) -> str:
    """One progress line for logs and pipes."""
    return (
        f"[{elapsed:5.1f}s] settled {snapshot.settled}/{orders}: handled {snapshot.handled}, "
        f"retrying {snapshot.waiting}, dead-lettered {snapshot.dead_lettered}"
    )


class View:
    """Shows progress: redrawn in place on a terminal, a line a second otherwise.

    Args:
        stream: Where to write (stdout).
        orders: How many orders the run sends.
        live: Whether ``stream`` is a terminal that understands cursor movement.
    """

    def __init__(self, stream: IO[str], orders: int, *, live: bool) -> None:
        self._stream = stream
        self._orders = orders
        self._live = live
        self._started = time.monotonic()
        self._drawn = 0
        self._last_plain = 0.0

    @property
    def interval(self) -> float:
        """Seconds between updates worth making."""
        return 0.1 if self._live else _PLAIN_EVERY

    def say(self, line: str) -> None:
        """Print a line above the live part."""
        self._clear()
        self._stream.write(line + "\n")
        self._stream.flush()

    def update(self, snapshot: Snapshot, *, force: bool = False) -> None:
        """Show ``snapshot``."""
        elapsed = time.monotonic() - self._started
        if not self._live:
            if force or elapsed - self._last_plain >= _PLAIN_EVERY:
                self._last_plain = elapsed
                self.say(plain_line(snapshot, self._orders, elapsed))
            return
        self._clear()
        lines = live_lines(snapshot, self._orders, elapsed)
        self._stream.write("".join(f"\x1b[2K{line}\n" for line in lines))
        self._stream.flush()
        self._drawn = len(lines)

    def _clear(self) -> None:
        if self._drawn:
            # Up to the first line of the live part; it is redrawn over.
            self._stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def finish(self) -> float:
        """Take the live part off the screen (the summary follows); return the seconds run."""
        self._clear()
        self._stream.flush()
        return time.monotonic() - self._started
