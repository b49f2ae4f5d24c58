"""What the test mode reports: handler calls, dead letters, and its one error."""

from __future__ import annotations

from typing import Any

import attrs

from kafka_retry.errors import KafkaRetryError
from kafka_retry.message import Header, Message, Provenance, decode_provenance, split_headers
from kafka_retry.retry.table import Row, row_message

__all__ = ["Call", "DeadLetter", "NotSettledError"]


class NotSettledError(KafkaRetryError):
    """Raised when the in-memory consumer still has work after a drain's bounds.

    Attributes:
        pending: What was still going on, one line each.
    """

    def __init__(self, message: str, pending: list[str]) -> None:
        super().__init__("\n  ".join([message, *pending]))
        self.pending = pending


@attrs.frozen
class Call:
    """One finished handler call.

    Attributes:
        message: What the handler got.
        started_at: Clock time (seconds since the epoch) when it started.
        finished_at: Clock time when it returned or raised.
        error: What it raised, or None when it succeeded.
    """

    message: Message
    started_at: float
    finished_at: float
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        """Whether the handler succeeded."""
        return self.error is None


@attrs.frozen
class DeadLetter:
    """A record of a dead-letter topic (or a dead-lettered row of the retry table), decoded.

    Attributes:
        topic: The dead-letter topic (the table, for a row).
        partition: Its partition there (0 for a row).
        offset: Its offset there (the row id, for a row).
        key: The original key, byte-exact.
        value: The original value, byte-exact.
        headers: The original headers, without ``kafka-retry-*`` ones.
        timestamp: The original record's timestamp (milliseconds since the epoch).
        provenance: Where it came from and why it failed last; None if the
            record has no (valid) provenance headers.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]
    timestamp: int
    provenance: Provenance | None

    @classmethod
    def from_record(cls, record: Any) -> DeadLetter:
        """Decode a consumer record (aiokafka's or the in-memory broker's)."""
        original, ours = split_headers(record.headers or ())
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=original,
            timestamp=record.timestamp,
            provenance=decode_provenance(ours) if ours else None,
        )

    @classmethod
    def from_row(cls, row: Row, table: str = "retry table") -> DeadLetter:
        """Decode a dead-lettered row of the postgres backend's table.

        ``row`` is a row of ``SELECT * FROM <schema>.<table>`` (asyncpg's, or the
        in-memory table's). ``topic`` is then ``table``, ``partition`` 0 and
        ``offset`` the row's id; the provenance is the row's (original topic,
        partition and offset, attempts made, last error in full).
        """
        message = row_message(row, row["consumer_group"])
        return cls(
            topic=table,
            partition=0,
            offset=row["id"],
            key=message.key,
            value=message.value,
            headers=message.headers,
            timestamp=message.timestamp,
            provenance=message.provenance,
        )

    @property
    def main_topic(self) -> str | None:
        """The main topic the message was first consumed from."""
        return None if self.provenance is None else self.provenance.original_topic

    @property
    def attempts(self) -> int | None:
        """How many attempts failed."""
        return None if self.provenance is None else self.provenance.attempts

    @property
    def error_type(self) -> str | None:
        """The qualified exception name of the last attempt."""
        return None if self.provenance is None else self.provenance.error_type

    @property
    def error_message(self) -> str | None:
        """The (truncated) error text of the last attempt."""
        return None if self.provenance is None else self.provenance.error_message

    def header(self, name: str) -> bytes | None:
        """The value of the last original header called ``name``, or None."""
        for header_name, value in reversed(self.headers):
            if header_name == name:
                return value
        return None
