"""Formatting for the command line: tables, times, durations, bytes; a progress bar."""

from __future__ import annotations

import datetime as dt
import re
import sys
from collections.abc import Sequence
from typing import IO

from kafka_retry.errors import ConfigError

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def format_time(epoch_ms: int | None) -> str:
    """``2024-05-01 12:00:03Z`` (UTC, whole seconds); ``-`` for None."""
    if epoch_ms is None:
        return "-"
    moment = dt.datetime.fromtimestamp(epoch_ms / 1000, dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def iso_time(epoch_ms: int | None) -> str | None:
    """ISO 8601 in UTC with milliseconds, for JSON; None stays None."""
    if epoch_ms is None:
        return None
    moment = dt.datetime.fromtimestamp(epoch_ms / 1000, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str, now_ms: int, option: str = "--since") -> int:
    """Epoch milliseconds of an ISO 8601 time (UTC unless it says otherwise) or ``30m`` ago.

    Relative units: ``s``, ``m``, ``h``, ``d``, ``w``.

    Raises:
        ConfigError: Neither form; names ``option``.
    """
    stripped = text.strip()
    relative = _RELATIVE.match(stripped)
    if relative:
        seconds = float(relative.group(1)) * _UNITS[relative.group(2)]
        return now_ms - round(seconds * 1000)
    try:
        moment = dt.datetime.fromisoformat(stripped.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            option, f"expected a time like 2024-05-01T12:00Z or an age like 30m, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def format_duration(seconds: float) -> str:
    """``0.5s``, ``5s``, ``1m30s``, ``2h``: short, exact to the second above a minute."""
    if seconds < 60:
        return f"{seconds:g}s"
    whole = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, whole = divmod(whole, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)


def truncate(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, ending in ``…`` when cut."""
    if width <= 0:
        return ""
    return text if len(text) <= width else text[: width - 1] + "…"


def one_line(text: str) -> str:
    """``text`` with control characters (newlines, escapes) shown as ``\\n``-style escapes."""
    return _CONTROL.sub(lambda match: repr(match.group())[1:-1], text)


def as_text(data: bytes) -> str | None:
    """``data`` decoded as UTF-8, or None when it is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def preview(data: bytes | None, width: int = 24) -> str:
    """A short one-line view: the text, ``0x``-hex when not text, ``(null)`` for None."""
    if data is None:
        return "(null)"
    text = as_text(data)
    return truncate(one_line(text) if text is not None else "0x" + data.hex(), width)


def bytes_json(data: bytes | None) -> dict[str, str] | None:
    """``{"text": ...}`` when ``data`` is UTF-8, else ``{"hex": ...}``; None stays None."""
    if data is None:
        return None
    text = as_text(data)
    return {"text": text} if text is not None else {"hex": data.hex()}


def hexdump(data: bytes, width: int = 16) -> list[str]:
    """Lines of ``offset  hex bytes  |printable|``."""
    lines = []
    for start in range(0, len(data), width):
        chunk = data[start : start + width]
        hexes = " ".join(f"{byte:02x}" for byte in chunk)
        shown = "".join(chr(byte) if 32 <= byte < 127 else "." for byte in chunk)
        lines.append(f"{start:08x}  {hexes:<{width * 3 - 1}}  |{shown}|")
    return lines


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    right: Sequence[int] = (),
    flexible: int | None = None,
    width: int | None = None,
) -> list[str]:
    """Align ``rows`` under ``headers``, two spaces apart.

    Args:
        headers: Column titles.
        rows: Cells, as text.
        right: Indexes of right-aligned (numeric) columns.
        flexible: Index of the column cut to keep lines within ``width``.
        width: The line width to keep to, if any.
    """
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]
    if flexible is not None and width is not None:
        others = sum(w + 2 for i, w in enumerate(widths) if i != flexible)
        widths[flexible] = max(len(headers[flexible]), min(widths[flexible], width - others))

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            cell = truncate(cell, widths[i])
            out.append(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    return [line(headers), *(line(row) for row in rows)]


class Progress:
    """A progress bar on a terminal, redrawn in place; silent on anything else.

    Args:
        label: What is progressing.
        stream: Where to draw (default: stderr).
    """

    def __init__(self, label: str, stream: IO[str] | None = None) -> None:
        self._label = label
        self._stream = stream or sys.stderr
        self._live = bool(getattr(self._stream, "isatty", lambda: False)())
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        if not self._live:
            return
        self._stream.write("\r" + bar(self._label, done, total))
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        """End the bar's line."""
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False


def bar(label: str, done: int, total: int, size: int = 30) -> str:
    """``label [#######-------] done/total``."""
    filled = size if total <= 0 else min(size, size * done // total)
    return f"{label} [{'#' * filled}{'-' * (size - filled)}] {done}/{total}"
