"""Rows of the retry table: the byte-exact codec and the SQL statements on them.

Pure code (no I/O): turning a :class:`~kafka_retry.retry.base.Failure` into
bind parameters and a claimed row back into a :class:`~kafka_retry.Message`.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import math
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import attrs

from kafka_retry.config import DatabaseConfig
from kafka_retry.message import Header, Message, Provenance, is_traceparent
from kafka_retry.retry._pg_schema import quote
from kafka_retry.retry.base import Failure

PENDING = "pending"
#: Ordered retries: a message stored behind an unsettled row of its key, not tried yet.
WAITING = "waiting"
SUCCEEDED = "succeeded"
DEAD_LETTERED = "dead_lettered"
STATES = (PENDING, WAITING, SUCCEEDED, DEAD_LETTERED)
#: The error type a waiting row carries until it is tried.
WAITING_ERROR = "kafka_retry.Waiting"

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MILLISECOND = dt.timedelta(milliseconds=1)
_MS_TOLERANCE = 0.001


class Row(Protocol):
    """A database row: an asyncpg ``Record`` or, in tests, a dict."""

    def __getitem__(self, key: str, /) -> Any: ...


@functools.lru_cache(maxsize=256)  # a storm's failures share their milliseconds
def to_datetime(epoch_ms: int) -> dt.datetime:
    """Epoch milliseconds as an aware UTC datetime (exact: no float on the way)."""
    return _EPOCH + dt.timedelta(milliseconds=epoch_ms)


def floor_datetime(seconds: float) -> dt.datetime:
    """A clock reading as a datetime, rounded down to the millisecond.

    Rounding down means a row is never taken before it is due; a reading a
    hair (under a microsecond) short of a millisecond counts as that
    millisecond, since waking "at" a due time can read an ulp short of it.
    """
    return to_datetime(math.floor(seconds * 1000 + _MS_TOLERANCE))


def to_epoch_ms(moment: dt.datetime) -> int:
    """An aware datetime as epoch milliseconds (sub-millisecond parts dropped)."""
    return (moment - _EPOCH) // _MILLISECOND


@functools.lru_cache(maxsize=1024)  # a storm repeats its error texts
def clean_text(text: str) -> str:
    """``text`` that PostgreSQL's ``text`` accepts: no NUL, no lone surrogates.

    An error message may contain either; refusing the row would block the
    message forever, so the offending characters are replaced.
    """
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def encode_headers(
    headers: Iterable[Header],
) -> tuple[Sequence[bytes], Sequence[bytes | None]]:
    """Headers as two parallel arrays: names as UTF-8 bytes, values as given.

    Names are stored as bytes so that any name survives, NUL included;
    ``surrogateescape`` makes :func:`decode_headers` its exact inverse.
    No headers (the common case) are two shared empty tuples: a storm's rows
    wait in memory for their transaction, and fewer objects means less
    garbage collection meanwhile.
    """
    if not headers:
        return (), ()
    names: list[bytes] = []
    values: list[bytes | None] = []
    for name, value in headers:
        names.append(name.encode("utf-8", "surrogateescape"))
        values.append(None if value is None else bytes(value))
    return names, values


def decode_headers(
    names: Sequence[bytes] | None, values: Sequence[bytes | None] | None
) -> tuple[Header, ...]:
    """The inverse of :func:`encode_headers`.

    Raises:
        ValueError: The arrays differ in length (the table's CHECK prevents it).
    """
    names = names or ()
    values = values or ()
    if len(names) != len(values):
        raise ValueError(f"{len(names)} header names but {len(values)} values")
    return tuple(
        (name.decode("utf-8", "surrogateescape"), value)
        for name, value in zip(names, values, strict=True)
    )


def affected_rows(status: str) -> int:
    """The row count of a command status such as ``UPDATE 12``."""
    return int(status.rsplit(" ", 1)[-1])


def key_hash(key: bytes | None) -> int | None:
    """The 64-bit (signed, as PostgreSQL's ``bigint``) hash of a record key; None for a null key.

    Stable across processes and versions (BLAKE2b), unlike ``hash()``. Two keys
    that collide are merely ordered together.
    """
    if key is None:
        return None
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big", signed=True)


def insert_params(
    failure: Failure, state: str, due_ms: int, ordered: bool = False
) -> tuple[object, ...]:
    """Bind parameters of :attr:`Statements.insert` for ``failure``.

    ``ordered`` stores the key hash, which makes the row ordered behind (and
    ahead of) the other rows of its key.
    """
    message = failure.message
    _topic, partition, offset, timestamp = failure.original()
    names, values = encode_headers(message.headers)
    return (
        failure.group,
        message.main_topic,
        partition,
        offset,
        message.key,
        message.value,
        names,
        values,
        timestamp,
        failure.attempts,
        state,
        to_datetime(due_ms),
        to_datetime(failure.failed_at),
        clean_text(failure.error_type),
        clean_text(failure.error_message),
        failure.span,
        key_hash(message.key) if ordered else None,
    )


def waiting_params(failure: Failure) -> tuple[object, ...]:
    """Bind parameters of :attr:`Statements.insert` for a message stored as ``waiting``.

    ``failure`` describes the message as it arrived (its "error" says why it
    waits): ``attempts`` is 0, since it has not been tried, and it is due at once.
    """
    params = list(insert_params(failure, WAITING, failure.failed_at, ordered=True))
    params[INSERT_COLUMNS.index("attempts")] = 0
    return tuple(params)


def row_message(row: Row, group: str) -> Message:
    """The Message a retry handler gets for a claimed row.

    ``topic``, ``partition`` and ``offset`` are those of the original record
    (there is no retry topic); ``attempt`` is one more than the attempts made.
    """
    attempts: int = row["attempts"]
    provenance = (
        None
        if attempts == 0
        else Provenance(
            attempts=attempts,
            original_topic=row["main_topic"],
            original_partition=row["kafka_partition"],
            original_offset=row["kafka_offset"],
            original_timestamp=row["message_timestamp"],
            group=group,
            failed_at=to_epoch_ms(row["failed_at"]),
            due_at=to_epoch_ms(row["due_at"]),
            error_type=row["last_error_type"],
            error_message=row["last_error"],
            span=_span(row["last_span"]),
        )
    )
    return Message(
        topic=row["main_topic"],
        partition=row["kafka_partition"],
        offset=row["kafka_offset"],
        key=row["message_key"],
        value=row["message_value"],
        headers=decode_headers(row["header_names"], row["header_values"]),
        timestamp=row["message_timestamp"],
        main_topic=row["main_topic"],
        attempt=attempts + 1,
        provenance=provenance,
    )


def _span(text: str | None) -> str | None:
    """A stored span, if it is one: a row is as untrusted as a header."""
    return text if text is not None and is_traceparent(text) else None


def chain_indices(messages: Sequence[Message], ordering: str) -> list[list[int]]:
    """Group a batch (in due order) into chains that run one after another inside.

    ``"partition"``: one chain per main topic and partition; ``"key"``: one per
    main topic and key (a null key is its own chain); ``"none"``: one per row.
    """
    chains: dict[object, list[int]] = {}
    for index, message in enumerate(messages):
        group: object
        if ordering == "partition":
            group = (message.main_topic, message.partition)
        elif ordering == "key" and message.key is not None:
            group = (message.main_topic, message.key)
        else:
            group = index
        chains.setdefault(group, []).append(index)
    return list(chains.values())


#: The columns an insert sets, in the order of :func:`insert_params`.
INSERT_COLUMNS = (
    "consumer_group",
    "main_topic",
    "kafka_partition",
    "kafka_offset",
    "message_key",
    "message_value",
    "header_names",
    "header_values",
    "message_timestamp",
    "attempts",
    "state",
    "due_at",
    "failed_at",
    "last_error_type",
    "last_error",
    "last_span",
    "key_hash",
)
_COLUMNS = ", ".join(INSERT_COLUMNS)
_RETURNED = (
    "r.id, r.main_topic, r.kafka_partition, r.kafka_offset, r.message_key, r.message_value,"
    " r.header_names, r.header_values, r.message_timestamp, r.attempts, r.due_at,"
    " r.failed_at, r.last_error_type, r.last_error, r.last_span"
)
# A row is claimable only as the earliest unsettled row of its key (keyless rows always).
# The id breaks ties: a message redelivered after a crash may be stored as waiting
# behind its own earlier row, at the same offset, and must not run beside it.
_HEAD = (
    "(c.key_hash IS NULL OR NOT EXISTS (SELECT 1 FROM {table} AS e"
    " WHERE e.consumer_group = c.consumer_group AND e.main_topic = c.main_topic"
    " AND e.key_hash = c.key_hash AND e.state IN ('pending', 'waiting')"
    " AND e.key_hash IS NOT NULL"
    " AND (e.kafka_partition, e.kafka_offset, e.id) < (c.kafka_partition, c.kafka_offset, c.id)))"
)
# Guards every write of a poller: the row is still ours, at our tier, and pending.
_OURS = "r.claimed_by = $2 AND r.attempts = $3 AND r.state = 'pending'"


@attrs.frozen
class Statements:
    """The SQL of the backend for one table; values always go in as parameters."""

    table: str

    @classmethod
    def of(cls, database: DatabaseConfig) -> Statements:
        """Statements on ``database``'s table (identifiers checked and quoted).

        Raises:
            ConfigError: The schema or table is not a plain identifier.
        """
        schema = quote(database.schema, "database.schema")
        return cls(f"{schema}.{quote(database.table, 'database.table')}")

    @property
    def insert(self) -> str:
        """Parameters: the columns of :data:`INSERT_COLUMNS`, in order."""
        placeholders = ", ".join(f"${n}" for n in range(1, len(INSERT_COLUMNS) + 1))
        return f"INSERT INTO {self.table} ({_COLUMNS}) VALUES ({placeholders})"

    @property
    def claim(self) -> str:
        """$1 group, $2 attempts (the tier), $3 limit, $4 lease in seconds, $5 worker id,
        $6 main topics. Returns the claimed rows.

        Due times and leases are compared with the database's ``now()``, one
        clock for every instance: one whose clock runs ahead neither takes a
        row early nor a lease that has not run out. A keyed row is taken only
        while no earlier row of its key is unsettled (ordered retries).
        """
        return self._claim("c.state = 'pending'")

    @property
    def claim_waiting(self) -> str:
        """:attr:`claim` for tier 0 (ordered retries): waiting rows, and ones a crash left
        pending at attempts 0. A claimed waiting row becomes pending."""
        return self._claim("c.state IN ('pending', 'waiting')")

    def _claim(self, states: str) -> str:
        head = _HEAD.format(table=self.table)
        return (
            f"WITH due AS (SELECT c.id FROM {self.table} AS c"
            f" WHERE {states} AND c.consumer_group = $1 AND c.attempts = $2"
            " AND c.due_at <= now() AND (c.claimed_until IS NULL OR c.claimed_until <= now())"
            f" AND c.main_topic = ANY($6::text[]) AND {head}"
            " ORDER BY c.due_at LIMIT $3 FOR UPDATE SKIP LOCKED)"
            f" UPDATE {self.table} AS r SET claimed_until = now() + make_interval(secs => $4),"
            " claimed_by = $5, state = 'pending', updated_at = now()"
            f" FROM due WHERE r.id = due.id RETURNING {_RETURNED}"
        )

    @property
    def unsettled_keys(self) -> str:
        """$1 group, $2 main topic, $3 partition: keys of ordered rows pending or waiting."""
        return (
            f"SELECT DISTINCT message_key FROM {self.table}"
            " WHERE consumer_group = $1 AND main_topic = $2 AND kafka_partition = $3"
            " AND state IN ('pending', 'waiting') AND key_hash IS NOT NULL"
        )

    @property
    def dead_letter_followers(self) -> str:
        """$1 ids of rows just dead-lettered: dead-letter the waiting rows of their keys
        (``ordered_dead_letter="dead_letter"``), each with its head's error."""
        return (
            f"UPDATE {self.table} AS f SET state = 'dead_lettered',"
            " last_error_type = h.last_error_type, last_error = h.last_error,"
            " failed_at = h.failed_at, updated_at = now()"
            f" FROM {self.table} AS h WHERE h.id = ANY($1::bigint[])"
            " AND h.state = 'dead_lettered' AND h.key_hash IS NOT NULL"
            " AND f.consumer_group = h.consumer_group AND f.main_topic = h.main_topic"
            " AND f.key_hash = h.key_hash AND f.state = 'waiting'"
        )

    @property
    def due_in(self) -> str:
        """$1 group, $2 attempts, $3 main topics: seconds (by the database's clock)
        until the earliest pending row that is not due yet falls due."""
        return (
            f"SELECT extract(epoch FROM due_at - now())::float8 FROM {self.table}"
            " WHERE state = 'pending' AND consumer_group = $1 AND attempts = $2"
            " AND due_at > now() AND main_topic = ANY($3::text[])"
            " ORDER BY due_at LIMIT 1"
        )

    @property
    def succeed(self) -> str:
        """$1 ids, $2 worker id, $3 attempts (the tier)."""
        return (
            f"UPDATE {self.table} AS r SET state = 'succeeded', attempts = r.attempts + 1,"
            " claimed_until = NULL, claimed_by = NULL, updated_at = now()"
            f" WHERE r.id = ANY($1::bigint[]) AND {_OURS}"
        )

    @property
    def fail(self) -> str:
        """$1 ids, $2 worker id, $3 attempts (the tier), then per row: $4 state,
        $5 due_at, $6 failed_at, $7 error type, $8 error text, $9 span."""
        return (
            f"UPDATE {self.table} AS r SET state = u.state, attempts = r.attempts + 1,"
            " due_at = u.due_at, failed_at = u.failed_at, last_error_type = u.error_type,"
            " last_error = u.error, last_span = u.span, claimed_until = NULL,"
            " claimed_by = NULL, updated_at = now()"
            " FROM unnest($1::bigint[], $4::text[], $5::timestamptz[], $6::timestamptz[],"
            " $7::text[], $8::text[], $9::text[])"
            " AS u(id, state, due_at, failed_at, error_type, error, span)"
            f" WHERE r.id = u.id AND {_OURS}"
        )

    @property
    def extend(self) -> str:
        """$1 ids, $2 worker id, $3 attempts (the tier), $4 lease in seconds from now()."""
        return (
            f"UPDATE {self.table} AS r SET claimed_until = now() + make_interval(secs => $4)"
            f" WHERE r.id = ANY($1::bigint[]) AND {_OURS}"
        )

    @property
    def release(self) -> str:
        """$1 ids, $2 worker id, $3 attempts (the tier): hand the rows back unhandled."""
        return (
            f"UPDATE {self.table} AS r SET claimed_until = NULL, claimed_by = NULL,"
            f" updated_at = now() WHERE r.id = ANY($1::bigint[]) AND {_OURS}"
        )

    @property
    def delete_succeeded(self) -> str:
        """$1 group, $2 age in seconds, $3 most rows to delete at once."""
        return (
            f"DELETE FROM {self.table} WHERE id IN (SELECT id FROM {self.table}"
            " WHERE state = 'succeeded' AND consumer_group = $1"
            " AND updated_at < now() - make_interval(secs => $2) LIMIT $3)"
        )

    @property
    def counts(self) -> str:
        """$1 group: rows per (state, attempts)."""
        return (
            f"SELECT state, attempts, count(*) AS n FROM {self.table}"
            " WHERE consumer_group = $1 GROUP BY state, attempts"
        )

    @property
    def dead_lettered_count(self) -> str:
        """$1 group."""
        return (
            f"SELECT count(*) FROM {self.table}"
            " WHERE consumer_group = $1 AND state = 'dead_lettered'"
        )
