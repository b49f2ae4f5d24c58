"""Failure groups: dead letters whose errors differ only in numbers, ids and quoted values.

``failure_fingerprint("builtins.TimeoutError", "order 17 timed out after 500 ms")``
is ``"builtins.TimeoutError: order <n> timed out after <n> ms"``, the same for
every order and every duration, so a thousand dead letters of one outage form
one group an operator can look at and replay at once. Pure, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, Iterable

import attrs

from kafka_retry.deadletter._model import DeadLetterEntry

__all__ = ["FailureGroup", "failure_fingerprint", "fingerprint_of", "group_entries", "stable_id"]

# Order matters: quoted text first (it may hold anything), then ids that
# contain digits, then the remaining numbers.
_MASKS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"'[^']*'"), "'<str>'"),
    (re.compile(r'"[^"]*"'), '"<str>"'),
    (re.compile(r"`[^`]*`"), "`<str>`"),
    (
        re.compile(r"\b[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\b", re.I),
        "<uuid>",
    ),
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), "<hex>"),
    # A long run of hex digits with at least one digit: a digest, an object id.
    (re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b", re.I), "<hex>"),
    # Numbers not glued to a preceding letter, so names like retry1 or utf8 stay.
    (re.compile(r"(?<![A-Za-z_<])[-+]?\d+(?:[.,:]\d+)*"), "<n>"),
)
_SPACE = re.compile(r"\s+")


def failure_fingerprint(error_type: str, error_message: str) -> str:
    """``TYPE: MESSAGE`` with numbers, ids (uuids, hex) and quoted values masked.

    Args:
        error_type: The qualified exception type of the last failure.
        error_message: Its message.

    Returns:
        The fingerprint: dead letters whose errors differ only in those parts share it.
    """
    text = _SPACE.sub(" ", error_message).strip()
    for pattern, mask in _MASKS:
        text = pattern.sub(mask, text)
    kind = error_type.strip() or "unknown"
    return f"{kind}: {text}" if text else kind


def fingerprint_of(entry: DeadLetterEntry) -> str:
    """The failure fingerprint of ``entry`` (``unknown`` without provenance)."""
    if entry.provenance is None:
        return failure_fingerprint("", "")
    return failure_fingerprint(entry.provenance.error_type, entry.provenance.error_message)


def stable_id(entry: DeadLetterEntry) -> str:
    """An id that names ``entry`` among every topic's dead letters.

    Row ids (postgres backend) are unique already; a Kafka position
    ``PARTITION:OFFSET`` is qualified by its main topic: ``TOPIC:PARTITION:OFFSET``.
    Both are accepted by the stores' ``get`` and by :class:`DeadLetterQuery` ids.
    """
    return entry.id if entry.id.isdigit() else f"{entry.main_topic}:{entry.id}"


@attrs.frozen
class FailureGroup:
    """Dead letters that share a failure fingerprint.

    Attributes:
        fingerprint: See :func:`failure_fingerprint`.
        error_type: The exception type they failed with.
        example: The full error message of the first of them.
        count: How many dead letters.
        replayed: How many of them were replayed already.
        first: The earliest dead-lettering time (milliseconds since the epoch).
        last: The latest.
        topics: The main topics they came from, sorted.
    """

    fingerprint: str
    error_type: str
    example: str
    count: int
    replayed: int
    first: int
    last: int
    topics: tuple[str, ...]

    def add(self, entry: DeadLetterEntry) -> FailureGroup:
        """This group with ``entry`` counted in."""
        return attrs.evolve(
            self,
            count=self.count + 1,
            replayed=self.replayed + entry.replayed,
            first=min(self.first, entry.dead_lettered_at),
            last=max(self.last, entry.dead_lettered_at),
            topics=tuple(sorted({*self.topics, entry.main_topic})),
        )

    @classmethod
    def of(cls, entry: DeadLetterEntry) -> FailureGroup:
        """The group of one dead letter."""
        origin = entry.provenance
        return cls(
            fingerprint=fingerprint_of(entry),
            error_type=origin.error_type if origin else "",
            example=origin.error_message if origin else "",
            count=1,
            replayed=int(entry.replayed),
            first=entry.dead_lettered_at,
            last=entry.dead_lettered_at,
            topics=(entry.main_topic,),
        )


def _collect(groups: dict[str, FailureGroup], entry: DeadLetterEntry) -> None:
    key = fingerprint_of(entry)
    found = groups.get(key)
    groups[key] = FailureGroup.of(entry) if found is None else found.add(entry)


def _ordered(groups: dict[str, FailureGroup]) -> list[FailureGroup]:
    return sorted(groups.values(), key=lambda group: (-group.count, group.fingerprint))


def group_entries(entries: Iterable[DeadLetterEntry]) -> list[FailureGroup]:
    """The failure groups of ``entries``, the largest first."""
    groups: dict[str, FailureGroup] = {}
    for entry in entries:
        _collect(groups, entry)
    return _ordered(groups)


async def group_stream(entries: AsyncIterable[DeadLetterEntry]) -> list[FailureGroup]:
    """:func:`group_entries` of an asynchronous stream, without keeping the entries."""
    groups: dict[str, FailureGroup] = {}
    async for entry in entries:
        _collect(groups, entry)
    return _ordered(groups)


async def ids_in_group(entries: AsyncIterable[DeadLetterEntry], fingerprint: str) -> list[str]:
    """The :func:`stable_id` of each entry in the group ``fingerprint``, in stream order."""
    return [stable_id(entry) async for entry in entries if fingerprint_of(entry) == fingerprint]
