"""What the dead-letter tools work with: entries, queries, targets and results. Pure, no I/O."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import attrs

from kafka_retry.errors import DeadLetterError
from kafka_retry.message import Header, Provenance

__all__ = [
    "DeadLetterEntry",
    "DeadLetterQuery",
    "KafkaId",
    "ProgressCallback",
    "PurgePlan",
    "ReplayResult",
    "ReplayTarget",
    "parse_kafka_id",
    "parse_row_id",
]

#: ``progress(done, total)``: called as a replay advances.
ProgressCallback = Callable[[int, int], None]


@attrs.frozen
class DeadLetterEntry:
    """One dead letter of either backend, decoded.

    Attributes:
        id: ``PARTITION:OFFSET`` in its dead-letter topic (Kafka backend) or
            the row id (postgres backend).
        main_topic: The main topic the message came from.
        source: The dead-letter topic, or the qualified retry table.
        key: The original key, byte-exact.
        value: The original value, byte-exact.
        headers: The original headers, without ``kafka-retry-*`` ones.
        timestamp: The original record's timestamp (milliseconds since the epoch).
        dead_lettered_at: When its last attempt failed (milliseconds since the epoch).
        provenance: Where it came from and why it failed last; None for a
            record without (valid) provenance headers.
        replayed_at: When it was replayed, or None if it was not.
        replayed_to: Where it was replayed to (a topic, or ``retryN``).
    """

    id: str
    main_topic: str
    source: str
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]
    timestamp: int
    dead_lettered_at: int
    provenance: Provenance | None = None
    replayed_at: int | None = None
    replayed_to: str | None = None

    @property
    def replayed(self) -> bool:
        """Whether this dead letter was replayed already."""
        return self.replayed_at is not None

    @property
    def attempts(self) -> int | None:
        """How many attempts failed, if known."""
        return None if self.provenance is None else self.provenance.attempts

    @property
    def error(self) -> str:
        """``type: message`` of the last failure, or ``""`` when unknown."""
        if self.provenance is None:
            return ""
        kind, text = self.provenance.error_type, self.provenance.error_message
        return f"{kind}: {text}" if kind and text else kind or text


def _strings(value: str | Iterable[str]) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else list(value)
    return tuple(item.strip() for item in items if item.strip())


@attrs.frozen
class DeadLetterQuery:
    """Which dead letters to list, replay or purge; every given condition must hold.

    Attributes:
        topics: Main topics to look at; empty means every configured topic.
        ids: Only these ids (see :attr:`DeadLetterEntry.id`; on the Kafka
            backend ``TOPIC:PARTITION:OFFSET`` names the main topic too).
        since: Dead-lettered at or after this time (milliseconds since the epoch).
        until: Dead-lettered at or before this time.
        error: Text that the last error (``type: message``) contains, any case.
        replayed: False: only dead letters not replayed yet (the default);
            True: only replayed ones; None: both.
    """

    topics: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    ids: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    since: int | None = None
    until: int | None = None
    error: str | None = None
    replayed: bool | None = False

    def matches(self, entry: DeadLetterEntry) -> bool:
        """Whether ``entry`` is selected (topics and ids are the caller's business)."""
        if self.replayed is not None and entry.replayed != self.replayed:
            return False
        if self.since is not None and entry.dead_lettered_at < self.since:
            return False
        if self.until is not None and entry.dead_lettered_at > self.until:
            return False
        return not self.error or self.error.casefold() in entry.error.casefold()


@attrs.frozen
class KafkaId:
    """A dead letter's position: ``[TOPIC:]PARTITION:OFFSET``.

    Attributes:
        topic: The main or dead-letter topic, when given.
        partition: The partition of the dead-letter topic.
        offset: The offset there.
    """

    topic: str | None
    partition: int
    offset: int

    def matches(self, main_topic: str, dead_letter_topic: str, partition: int, offset: int) -> bool:
        """Whether this id names that record."""
        if self.topic is not None and self.topic not in (main_topic, dead_letter_topic):
            return False
        return (self.partition, self.offset) == (partition, offset)


def parse_kafka_id(text: str) -> KafkaId:
    """Parse ``PARTITION:OFFSET`` or ``TOPIC:PARTITION:OFFSET``.

    Topic names cannot contain ``:``, so the last two fields are the position.

    Raises:
        DeadLetterError: The text is not of that form.
    """
    parts = text.strip().split(":")
    numbers = parts[-2:]
    if len(parts) not in (2, 3) or not all(part.isdigit() for part in numbers):
        raise DeadLetterError(
            f"{text!r} is not a dead-letter id of the kafka backend "
            "(expected PARTITION:OFFSET or TOPIC:PARTITION:OFFSET)"
        )
    topic = parts[0] if len(parts) == 3 and parts[0] else None
    return KafkaId(topic, int(numbers[0]), int(numbers[1]))


def parse_row_id(text: str) -> int:
    """Parse a row id of the postgres backend.

    Raises:
        DeadLetterError: The text is not a positive whole number.
    """
    stripped = text.strip()
    if not stripped.isdigit() or int(stripped) < 1 or int(stripped) >= 2**63:
        raise DeadLetterError(
            f"{text!r} is not a dead-letter id of the postgres backend (expected a row id)"
        )
    return int(stripped)


@attrs.frozen
class ReplayTarget:
    """Where replayed dead letters go.

    Attributes:
        tier: None for the main topic; ``k`` for retry tier ``k`` (its handler
            sees ``attempt == k + 1``), which retries it at once.
    """

    tier: int | None = attrs.field(default=None)

    @tier.validator
    def _check_tier(self, attribute: attrs.Attribute[int | None], value: int | None) -> None:
        if value is not None and (not isinstance(value, int) or value < 1):
            raise DeadLetterError(f"retry tier must be a whole number >= 1, got {value!r}")

    @property
    def name(self) -> str:
        """``main`` or ``retryN``."""
        return "main" if self.tier is None else f"retry{self.tier}"


@attrs.frozen
class ReplayResult:
    """What a replay did (or, with ``dry_run``, would do).

    Attributes:
        target: Where the dead letters went.
        selected: Dead letters that matched and were not replayed before.
        replayed: Dead letters replayed now (0 on a dry run).
        already_replayed: Dead letters that matched but had been replayed before.
        dry_run: Whether nothing was sent.
        ids: ``main_topic/id`` of each dead letter replayed (or that would be).
    """

    target: ReplayTarget
    selected: int
    replayed: int
    already_replayed: int
    dry_run: bool
    ids: tuple[str, ...] = ()


@attrs.frozen
class PurgePlan:
    """The dead letters a purge deletes, fixed when it is planned.

    Attributes:
        query: What was asked for.
        count: How many dead letters go.
        per_topic: How many of them per main topic.
        cuts: Kafka backend: per ``(dead-letter topic, partition)``, the offset
            before which every record goes.
        max_id: Postgres backend: the highest row id that may go (rows that
            arrive after planning are kept).
    """

    query: DeadLetterQuery
    count: int
    per_topic: dict[str, int] = attrs.field(factory=dict)
    cuts: dict[tuple[str, int], int] = attrs.field(factory=dict)
    max_id: int | None = None
