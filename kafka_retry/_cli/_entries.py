"""Dead letters as table rows, as JSON, and in full. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kafka_retry._cli._output import (
    as_text,
    bytes_json,
    format_time,
    hexdump,
    iso_time,
    one_line,
    preview,
    table,
)
from kafka_retry.deadletter import DeadLetterEntry
from kafka_retry.message import escape_header_name

_LIST_HEADERS = ["TOPIC", "ID", "DEAD-LETTERED", "ATTEMPTS", "KEY", "ERROR"]


def list_lines(
    entries: Sequence[DeadLetterEntry], *, show_replayed: bool, width: int | None
) -> list[str]:
    """The dead letters as an aligned table, the error column cut to ``width``."""
    headers = list(_LIST_HEADERS)
    if show_replayed:
        headers.insert(-1, "REPLAYED")
    rows = []
    for entry in entries:
        row = [
            entry.main_topic,
            entry.id,
            format_time(entry.dead_lettered_at),
            "-" if entry.attempts is None else str(entry.attempts),
            preview(entry.key, 20),
            one_line(entry.error) or "-",
        ]
        if show_replayed:
            row.insert(-1, format_time(entry.replayed_at) if entry.replayed else "no")
        rows.append(row)
    return table(headers, rows, right=[3], flexible=len(headers) - 1, width=width)


def entry_json(entry: DeadLetterEntry) -> dict[str, Any]:
    """Everything about ``entry``; bytes as ``{"text": ...}`` or ``{"hex": ...}``."""
    origin = entry.provenance
    return {
        "id": entry.id,
        "topic": entry.main_topic,
        "source": entry.source,
        "dead_lettered_at": iso_time(entry.dead_lettered_at),
        "attempts": entry.attempts,
        "error_type": origin.error_type if origin else None,
        "error_message": origin.error_message if origin else None,
        "key": bytes_json(entry.key),
        "value": bytes_json(entry.value),
        "headers": [[escape_header_name(n), bytes_json(v)] for n, v in entry.headers],
        "timestamp": iso_time(entry.timestamp) if entry.timestamp >= 0 else None,
        "original": None
        if origin is None
        else {
            "topic": origin.original_topic,
            "partition": origin.original_partition,
            "offset": origin.original_offset,
            "group": origin.group,
        },
        "replayed_at": iso_time(entry.replayed_at),
        "replayed_to": entry.replayed_to,
    }


def _bytes_lines(data: bytes | None, indent: str = "  ") -> tuple[str, list[str]]:
    """A summary (``12 bytes, UTF-8 text``) and the content lines of ``data``."""
    if data is None:
        return "null", []
    if not data:
        return "empty", []
    text = as_text(data)
    size = f"{len(data)} byte{'s' if len(data) != 1 else ''}"
    if text is not None:
        return f"{size}, UTF-8 text", [indent + one_line(line) for line in text.splitlines()]
    return f"{size}, binary (hex)", [indent + line for line in hexdump(data)]


def show_lines(entry: DeadLetterEntry) -> list[str]:
    """Everything about one dead letter, for a reader."""
    origin = entry.provenance
    fields = [
        ("dead letter", f"{entry.main_topic} {entry.id}  (in {entry.source})"),
        ("dead-lettered", format_time(entry.dead_lettered_at)),
        ("attempts", "unknown" if entry.attempts is None else str(entry.attempts)),
        ("error", one_line(entry.error) or "unknown (no provenance headers)"),
    ]
    if origin is not None:
        where = f"{origin.original_topic} partition {origin.original_partition}"
        fields.append(("original", f"{where} offset {origin.original_offset}"))
        fields.append(("group", origin.group))
    fields.append(("timestamp", format_time(entry.timestamp) if entry.timestamp >= 0 else "-"))
    replayed = "no"
    if entry.replayed:
        replayed = f"{format_time(entry.replayed_at)} to {entry.replayed_to}"
    fields.append(("replayed", replayed))
    key_summary, key_lines = _bytes_lines(entry.key)
    fields.append(("key", key_summary))
    lines = [f"{name:<14}{value}" for name, value in fields]
    lines.extend(key_lines)
    lines.append(f"{'headers':<14}{len(entry.headers)}")
    for name, value in entry.headers:
        shown = "null" if value is None else preview(value, 200)
        lines.append(f"  {one_line(escape_header_name(name))}: {shown}")
    value_summary, value_lines = _bytes_lines(entry.value)
    lines.append(f"{'value':<14}{value_summary}")
    lines.extend(value_lines)
    return lines
