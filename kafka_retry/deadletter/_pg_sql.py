"""SQL of the dead-letter tools on the retry table, and rows as entries. Pure, no I/O.

Every value is a bind parameter; identifiers come quoted from
:class:`~kafka_retry.retry._pg_rows.Statements`.
"""

from __future__ import annotations

import attrs

from kafka_retry.deadletter._model import DeadLetterEntry, DeadLetterQuery, parse_row_id
from kafka_retry.message import Provenance
from kafka_retry.retry.table import (
    DEAD_LETTERED,
    Row,
    decode_headers,
    to_datetime,
    to_epoch_ms,
)

REPLAYED = "replayed"

COLUMNS = (
    "id, consumer_group, main_topic, kafka_partition, kafka_offset, message_key,"
    " message_value, header_names, header_values, message_timestamp, attempts, due_at,"
    " failed_at, last_error_type, last_error, state, replayed_at, replayed_to"
)


def states(replayed: bool | None) -> list[str]:
    """The row states a query's ``replayed`` setting selects."""
    if replayed is None:
        return [DEAD_LETTERED, REPLAYED]
    return [REPLAYED] if replayed else [DEAD_LETTERED]


@attrs.define
class Filter:
    """A WHERE clause under construction: conditions joined by AND, and their parameters."""

    clauses: list[str] = attrs.field(factory=list)
    params: list[object] = attrs.field(factory=list)

    def add(self, template: str, value: object) -> None:
        """Add ``template`` with ``{}`` standing for the next parameter."""
        self.params.append(value)
        self.clauses.append(template.format(f"${len(self.params)}"))

    @property
    def sql(self) -> str:
        """The conditions, joined."""
        return " AND ".join(self.clauses)


def query_filter(
    group: str, topics: tuple[str, ...], query: DeadLetterQuery, row_states: list[str]
) -> Filter:
    """The conditions that select ``query``'s rows of ``group`` in ``row_states``.

    Raises:
        DeadLetterError: An id is not a row id.
    """
    where = Filter()
    where.add("consumer_group = {}", group)
    where.add("state = ANY({}::text[])", row_states)
    if topics:
        where.add("main_topic = ANY({}::text[])", list(topics))
    if query.ids:
        where.add("id = ANY({}::bigint[])", [parse_row_id(text) for text in query.ids])
    if query.since is not None:
        where.add("failed_at >= {}", to_datetime(query.since))
    if query.until is not None:
        where.add("failed_at <= {}", to_datetime(query.until))
    if query.error:
        # The same text the Kafka backend matches: "type: message", any case.
        where.add(
            "strpos(lower(last_error_type || ': ' || last_error), lower({})) > 0", query.error
        )
    return where


def row_entry(row: Row, source: str) -> DeadLetterEntry:
    """The entry of a dead-lettered (or replayed) row of ``source``, the qualified table."""
    provenance = Provenance(
        attempts=row["attempts"],
        original_topic=row["main_topic"],
        original_partition=row["kafka_partition"],
        original_offset=row["kafka_offset"],
        original_timestamp=row["message_timestamp"],
        group=row["consumer_group"],
        failed_at=to_epoch_ms(row["failed_at"]),
        due_at=to_epoch_ms(row["due_at"]),
        error_type=row["last_error_type"],
        error_message=row["last_error"],
    )
    replayed = row["state"] == REPLAYED
    return DeadLetterEntry(
        id=str(row["id"]),
        main_topic=row["main_topic"],
        source=source,
        key=row["message_key"],
        value=row["message_value"],
        headers=decode_headers(row["header_names"], row["header_values"]),
        timestamp=row["message_timestamp"],
        dead_lettered_at=provenance.failed_at,
        provenance=provenance,
        replayed_at=to_epoch_ms(row["replayed_at"]) if replayed else None,
        replayed_to=row["replayed_to"] if replayed else None,
    )
