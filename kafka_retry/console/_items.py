"""Dead letters and failure groups as the JSON the console API answers with. Pure."""

from __future__ import annotations

import base64
from typing import Any

from kafka_retry._cli._output import iso_time
from kafka_retry.deadletter import DeadLetterEntry, FailureGroup, fingerprint_of, stable_id
from kafka_retry.message import escape_header_name

__all__ = ["encoded", "group_json", "item_json"]


def encoded(data: bytes | None) -> tuple[str | None, str | None]:
    """``(text, "utf-8")`` where ``data`` is UTF-8, else ``(base64, "base64")``; None stays None."""
    if data is None:
        return None, None
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"


def _bytes_fields(name: str, data: bytes | None) -> dict[str, Any]:
    text, encoding = encoded(data)
    return {name: text, f"{name}_encoding": encoding}


def item_json(entry: DeadLetterEntry) -> dict[str, Any]:
    """Everything about one dead letter.

    ``partition`` and ``offset`` are where the original record was in its main
    topic (None without provenance); ``source`` is the dead-letter topic or the
    retry table; key, value and header values come as text where they are
    UTF-8, else base64, as their ``*_encoding`` field says.
    """
    origin = entry.provenance
    headers = []
    for name, value in entry.headers:
        text, encoding = encoded(value)
        headers.append({"name": escape_header_name(name), "value": text, "encoding": encoding})
    return {
        "id": stable_id(entry),
        "topic": entry.main_topic,
        "partition": origin.original_partition if origin else None,
        "offset": origin.original_offset if origin else None,
        **_bytes_fields("key", entry.key),
        **_bytes_fields("value", entry.value),
        "headers": headers,
        "attempts": entry.attempts,
        "error_type": origin.error_type if origin else None,
        "error_message": origin.error_message if origin else None,
        "group": fingerprint_of(entry),
        "failed_at": iso_time(entry.dead_lettered_at),
        "timestamp": iso_time(entry.timestamp) if entry.timestamp >= 0 else None,
        "source": entry.source,
        "consumer_group": origin.group if origin else None,
        "replayed": entry.replayed,
        "replayed_at": iso_time(entry.replayed_at),
        "replayed_to": entry.replayed_to,
    }


def group_json(group: FailureGroup) -> dict[str, Any]:
    """One failure group."""
    return {
        "fingerprint": group.fingerprint,
        "error_type": group.error_type,
        "example": group.example,
        "count": group.count,
        "replayed": group.replayed,
        "first": iso_time(group.first),
        "last": iso_time(group.last),
        "topics": list(group.topics),
    }
