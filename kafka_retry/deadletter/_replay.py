"""What a replayed record looks like, and the replay ledger's record codec. Pure, no I/O.

A replayed record keeps the dead letter's key, value, original headers and
timestamp. It does not keep the old ``kafka-retry-*`` provenance, so it does not
look like a retry of a failure: it carries ``kafka-retry-replayed-from`` (where
the dead letter was) and ``kafka-retry-replayed-at`` (epoch milliseconds)
instead. A record replayed to retry tier ``k`` also gets fresh provenance:
attempts ``k``, due now, the last error kept.
"""

from __future__ import annotations

import hashlib
import json

import attrs

from kafka_retry.deadletter._model import DeadLetterEntry
from kafka_retry.message import HEADER_PREFIX, Header, producible_headers

H_REPLAYED_FROM = HEADER_PREFIX + "replayed-from"
H_REPLAYED_AT = HEADER_PREFIX + "replayed-at"


@attrs.frozen
class Outgoing:
    """One record to send.

    Attributes:
        topic: Where it goes.
        key: Its key.
        value: Its value.
        headers: Its headers, in order.
        timestamp: Its timestamp (milliseconds since the epoch), or None for "now".
    """

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[Header]
    timestamp: int | None


def replayed_record(
    entry: DeadLetterEntry, topic: str, origin: str, now_ms: int, tier: int | None
) -> Outgoing:
    """The record that replays ``entry`` to ``topic``.

    Args:
        entry: The dead letter.
        topic: The main topic, or the retry topic of tier ``tier``.
        origin: Where the dead letter is, for ``kafka-retry-replayed-from``.
        now_ms: The replay's time.
        tier: The retry tier ``topic`` belongs to, or None for the main topic.
    """
    headers: list[Header] = list(producible_headers(entry.headers))
    if tier is not None and entry.provenance is not None:
        fresh = attrs.evolve(entry.provenance, attempts=tier, due_at=now_ms)
        headers.extend(fresh.to_headers())
    headers.append((H_REPLAYED_FROM, origin.encode()))
    headers.append((H_REPLAYED_AT, str(now_ms).encode()))
    timestamp = entry.timestamp if entry.timestamp >= 0 else None
    return Outgoing(topic, entry.key, entry.value, headers, timestamp)


def fingerprint(entry: DeadLetterEntry) -> str:
    """A digest of the dead letter's content and failure time.

    The ledger keeps it beside each position, so a dead-letter topic that was
    deleted and created again (its offsets start over) does not inherit marks.
    """
    digest = hashlib.sha256()
    for part in (entry.key, entry.value):
        if part is None:
            digest.update(b"\x00")
        else:
            digest.update(b"\x01" + len(part).to_bytes(8, "big") + part)
    digest.update(f"{entry.timestamp}/{entry.dead_lettered_at}".encode())
    return digest.hexdigest()[:32]


@attrs.frozen
class Mark:
    """A replay recorded in the ledger.

    Attributes:
        fingerprint: :func:`fingerprint` of the dead letter.
        replayed_at: When (milliseconds since the epoch).
        replayed_to: Where (a topic).
    """

    fingerprint: str
    replayed_at: int
    replayed_to: str


def ledger_key(partition: int, offset: int) -> bytes:
    """The ledger key of the dead letter at ``partition``/``offset`` of its topic."""
    return f"{partition}:{offset}".encode()


def parse_ledger_key(key: bytes | None) -> tuple[int, int] | None:
    """``(partition, offset)`` of a ledger key, or None when it is not one."""
    if key is None:
        return None
    partition, sep, offset = key.decode("ascii", "replace").partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        return None
    return int(partition), int(offset)


def encode_mark(mark: Mark) -> bytes:
    """The ledger value of ``mark``: compact JSON."""
    fields = {"fingerprint": mark.fingerprint, "at": mark.replayed_at, "to": mark.replayed_to}
    return json.dumps(fields, separators=(",", ":")).encode()


def decode_mark(value: bytes | None) -> Mark | None:
    """The mark of a ledger value; None for a tombstone or anything malformed."""
    if value is None:
        return None
    try:
        fields = json.loads(value)
        mark = Mark(str(fields["fingerprint"]), int(fields["at"]), str(fields["to"]))
    except (ValueError, TypeError, KeyError):
        return None
    return mark
