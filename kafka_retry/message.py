"""The :class:`Message` a handler receives, and the provenance header codec.

Records written to a retry or dead-letter topic carry the original headers
followed by provenance headers, all named ``kafka-retry-*``. Each tier replaces
the previous tier's provenance headers, so a record does not grow per attempt.
Provenance read from a record is untrusted input: malformed fields are ignored.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

__all__ = ["HEADER_PREFIX", "Header", "Message", "Provenance"]

#: A Kafka record header: name, value (``None`` is a null value).
Header = tuple[str, bytes | None]

HEADER_PREFIX = "kafka-retry-"
H_ATTEMPTS = HEADER_PREFIX + "attempts"
H_TOPIC = HEADER_PREFIX + "original-topic"
H_PARTITION = HEADER_PREFIX + "original-partition"
H_OFFSET = HEADER_PREFIX + "original-offset"
H_TIMESTAMP = HEADER_PREFIX + "original-timestamp"
H_GROUP = HEADER_PREFIX + "group"
H_FAILED_AT = HEADER_PREFIX + "failed-at"
H_DUE_AT = HEADER_PREFIX + "due-at"
H_ERROR_TYPE = HEADER_PREFIX + "error-type"
H_ERROR_MESSAGE = HEADER_PREFIX + "error-message"
H_SPAN = HEADER_PREFIX + "span"

# Bounds that a forged header cannot get past.
_MAX_ATTEMPTS = 1_000_000
_MAX_TIME_MS = 253_402_300_799_000  # 9999-12-31T23:59:59Z
_MAX_TEXT = 65_536
_HEX = frozenset("0123456789abcdef")


@attrs.frozen
class Provenance:
    """Where a retried message came from and why its last attempt failed.

    Times are milliseconds since the Unix epoch.

    Attributes:
        attempts: Attempts that had failed when the record was written.
        original_topic: The main topic the message was first consumed from.
        original_partition: Its partition there.
        original_offset: Its offset there.
        original_timestamp: The original record's timestamp.
        group: The consumer group that handled it.
        failed_at: When the last attempt failed.
        due_at: The earliest time the next attempt may run.
        error_type: The qualified name of the exception of the last attempt.
        error_message: Its text, truncated.
        span: The span of the failed attempt in W3C ``traceparent`` form
            (``00-<trace id>-<span id>-<flags>``), when tracing was on; the
            next attempt's span links to it. None otherwise.
    """

    attempts: int
    original_topic: str
    original_partition: int
    original_offset: int
    original_timestamp: int
    group: str
    failed_at: int
    due_at: int
    error_type: str
    error_message: str
    span: str | None = None

    def to_headers(self) -> list[tuple[str, bytes]]:
        """Encode as ``kafka-retry-*`` headers (ASCII decimals and UTF-8 text)."""
        return provenance_headers(
            self.attempts,
            self.original_topic,
            self.original_partition,
            self.original_offset,
            self.original_timestamp,
            self.group,
            self.failed_at,
            self.due_at,
            self.error_type,
            self.error_message,
            self.span,
        )


@functools.lru_cache(maxsize=1024)
def _text_header(name: str, text: str) -> tuple[str, bytes]:
    # Topics, groups, error types and texts repeat for every failure of a storm:
    # the same header, not a new one per failure.
    return name, text.encode("utf-8", "replace")


@functools.lru_cache(maxsize=1024)
def _number_header(name: str, number: int) -> tuple[str, bytes]:
    # Attempts, partitions and the milliseconds of failed-at / due-at repeat too.
    return name, b"%d" % number


def provenance_headers(
    attempts: int,
    original_topic: str,
    original_partition: int,
    original_offset: int,
    original_timestamp: int,
    group: str,
    failed_at: int,
    due_at: int,
    error_type: str,
    error_message: str,
    span: str | None = None,
) -> list[tuple[str, bytes]]:
    """The ``kafka-retry-*`` headers of a :class:`Provenance` with these fields.

    What :meth:`Provenance.to_headers` returns, without building the
    Provenance: a failure storm encodes one set per failure.
    """
    headers = [
        _number_header(H_ATTEMPTS, attempts),
        _text_header(H_TOPIC, original_topic),
        _number_header(H_PARTITION, original_partition),
        (H_OFFSET, b"%d" % original_offset),
        (H_TIMESTAMP, b"%d" % original_timestamp),
        _text_header(H_GROUP, group),
        _number_header(H_FAILED_AT, failed_at),
        _number_header(H_DUE_AT, due_at),
        _text_header(H_ERROR_TYPE, error_type),
        _text_header(H_ERROR_MESSAGE, error_message),
    ]
    if span is not None:
        headers.append((H_SPAN, span.encode("ascii")))
    return headers


@attrs.frozen(slots=False)  # a dict class: attrs then sets fields in __init__ ~35% faster
class Message:
    """One record as a handler sees it.

    Attributes:
        topic: The topic it was read from (a retry topic for attempt > 1 on Kafka).
        partition: The partition it was read from.
        offset: Its offset there.
        key: The original key, byte-exact (``None`` for a null key).
        value: The original value, byte-exact (``None`` for a null value).
        headers: The original headers in order, duplicates kept, without ``kafka-retry-*``.
        timestamp: The original record timestamp, milliseconds since the epoch.
        main_topic: The main topic whose handler runs.
        attempt: 1 for the first try, 2 for the first retry, and so on.
        provenance: The previous failure, when ``attempt > 1``.
        blocking_attempt: The in-place try of this attempt: 1 for the first call,
            2 for the first of ``Config.blocking_retries``, and so on.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]
    timestamp: int
    main_topic: str
    attempt: int = 1
    provenance: Provenance | None = None
    blocking_attempt: int = 1

    def header(self, name: str) -> bytes | None:
        """The value of the last header called ``name``, or None."""
        for header_name, value in reversed(self.headers):
            if header_name == name:
                return value
        return None


class _Plain:
    """What :func:`plain_message` sets a Message's fields on before it becomes a Message.

    Empty: the fields are Message's (tests/unit/test_plain_message.py checks
    that the result equals ``Message(...)``), not a second list to keep in step.
    """


_new = object.__new__


def plain_message(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    timestamp: int,
    main_topic: str,
    attempt: int,
) -> Message:
    """``Message(topic, partition, offset, key, value, (), timestamp, main_topic, attempt)``.

    What attrs' ``__init__`` builds (Message has no defaults to compute, no
    validators or converters), in about half the time: the main tier makes
    one per record without headers. A frozen class's fields go through its
    attribute dictionary one item at a time; a plain class's are stored with
    the interpreter's fastest instruction. Assigning ``__class__`` is what
    Python allows between classes of one layout: the instance is then a
    Message like any other (frozen, equal and hashable alike).
    """
    message: Any = _new(_Plain)
    message.topic = topic
    message.partition = partition
    message.offset = offset
    message.key = key
    message.value = value
    message.headers = ()
    message.timestamp = timestamp
    message.main_topic = main_topic
    message.attempt = attempt
    message.provenance = None
    message.blocking_attempt = 1
    message.__class__ = Message
    return message  # type: ignore[no-any-return]


def plain_messages(
    records: Iterable[Any],
    topic: str,
    partition: int,
    main_topic: str,
    attempt: int,
    with_headers: Callable[[Any], Message],
) -> list[Message]:
    """The Messages of one partition's records, in order: :func:`plain_message` in one loop.

    ``records`` are aiokafka ``ConsumerRecord``s of ``topic``; those with
    headers are made by ``with_headers`` (which splits and decodes them). A
    record that is a Message already (the main tier's fetcher builds them: see
    :mod:`kafka_retry._direct`) is taken as it is.
    """
    plain = plain_message
    return [
        r
        if r.__class__ is Message
        else plain(topic, partition, r.offset, r.key, r.value, r.timestamp, main_topic, attempt)
        if not r.headers
        else with_headers(r)
        for r in records
    ]


def split_headers(headers: Iterable[Header]) -> tuple[tuple[Header, ...], dict[str, bytes]]:
    """Separate original headers from ``kafka-retry-*`` ones (the last of each name wins)."""
    original: list[Header] = []
    ours: dict[str, bytes] = {}
    for name, value in headers:
        if name.startswith(HEADER_PREFIX):
            if value is not None:
                ours[name] = value
        else:
            original.append((name, value))
    return tuple(original), ours


def _int(fields: dict[str, bytes], name: str, low: int, high: int) -> int | None:
    raw = fields.get(name)
    if raw is None or len(raw) > 20:
        return None
    try:
        number = int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    return number if low <= number <= high else None


def _text(fields: dict[str, bytes], name: str) -> str | None:
    raw = fields.get(name)
    if raw is None:
        return None
    return raw[:_MAX_TEXT].decode("utf-8", "replace")


def is_traceparent(text: str) -> bool:
    """Whether ``text`` has the W3C ``traceparent`` form of version 00.

    ``00-`` then 32 and 16 lowercase hex digits (not all zero) and two for the
    flags, joined by dashes; what :attr:`Provenance.span` holds.
    """
    parts = text.split("-")
    if len(parts) != 4 or parts[0] != "00":
        return False
    _, trace_id, span_id, flags = parts
    return (
        (len(trace_id), len(span_id), len(flags)) == (32, 16, 2)
        and set(trace_id + span_id + flags) <= _HEX
        and trace_id != "0" * 32
        and span_id != "0" * 16
    )


def _span(fields: dict[str, bytes]) -> str | None:
    raw = fields.get(H_SPAN)
    if raw is None or len(raw) != 55:
        return None
    text = raw.decode("ascii", "replace")
    return text if is_traceparent(text) else None


def decode_provenance(fields: dict[str, bytes]) -> Provenance | None:
    """Parse provenance headers; None when any field is missing or out of bounds."""
    attempts = _int(fields, H_ATTEMPTS, 1, _MAX_ATTEMPTS)
    partition = _int(fields, H_PARTITION, 0, 2**31 - 1)
    offset = _int(fields, H_OFFSET, 0, 2**63 - 1)
    timestamp = _int(fields, H_TIMESTAMP, -1, _MAX_TIME_MS)
    failed_at = _int(fields, H_FAILED_AT, 0, _MAX_TIME_MS)
    due_at = _int(fields, H_DUE_AT, 0, _MAX_TIME_MS)
    topic = _text(fields, H_TOPIC)
    group = _text(fields, H_GROUP)
    numbers = (attempts, partition, offset, timestamp, failed_at, due_at)
    if topic is None or group is None or any(n is None for n in numbers):
        return None
    assert attempts is not None and partition is not None and offset is not None  # for mypy
    assert timestamp is not None and failed_at is not None and due_at is not None
    return Provenance(
        attempts=attempts,
        original_topic=topic,
        original_partition=partition,
        original_offset=offset,
        original_timestamp=timestamp,
        group=group,
        failed_at=failed_at,
        due_at=due_at,
        error_type=_text(fields, H_ERROR_TYPE) or "",
        error_message=_text(fields, H_ERROR_MESSAGE) or "",
        span=_span(fields),
    )


def escape_header_name(name: str) -> str:
    """``name`` as valid UTF-8 text: bytes that were not UTF-8 become ``\\xNN`` text.

    A header name that is not valid UTF-8 reaches handlers decoded with
    ``surrogateescape`` (``docs/advanced/security.md``); aiokafka's producer and
    UTF-8 terminals refuse the surrogates, so ``b"\\xff-id"`` is written as the
    7-character name ``\\xff-id``. Other names are returned as they are.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        try:
            raw = name.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a lone surrogate that no decoding produced
            return name.encode("utf-8", "backslashreplace").decode("utf-8")
        return raw.decode("utf-8", "backslashreplace")
    return name


def producible_headers(headers: Sequence[Header]) -> Sequence[Header]:
    """``headers`` with names :func:`escape_header_name` made; ``headers`` itself if all ASCII."""
    if not headers or all(name.isascii() for name, _ in headers):  # the common case
        return headers
    return tuple((escape_header_name(name), value) for name, value in headers)


def with_provenance(original: Sequence[Header], provenance: Provenance) -> list[Header]:
    """Original headers followed by fresh provenance headers."""
    return [*original, *provenance.to_headers()]
